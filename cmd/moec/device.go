package main

import (
	"errors"

	"github.com/spf13/pflag"

	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/gpu"
)

// deviceFlag adds --device to a command's flags.
func deviceFlag(f *pflag.FlagSet, v *string, what string) {
	f.StringVar(v, "device", "", what+" on a GPU through moec's generated CUDA: cuda (needs the NVIDIA driver's libcuda.so.1 and clang, no CUDA SDK) or cuda-emulated (the same generated CUDA on the CPU, for checking)")
}

// checkDevice refuses a --device moec does not know (a usage error) and, for cuda, a
// machine without the NVIDIA driver, naming what is missing.
func checkDevice(device string) error {
	if device == "" {
		return nil
	}
	mode, err := gpu.ParseMode(device)
	if err != nil {
		return usage(diag.RuntimeWrap(diag.CodeBadRunOption, err, "--device"))
	}
	if mode != gpu.Device {
		return nil
	}
	if err := gpu.CheckDriver(); err != nil {
		return diag.RuntimeWrap(diag.CodeUnsupportedFeature, err, "--device cuda")
	}
	return nil
}

// checkRunDevice is checkDevice for moec run on ranks in-process ranks (0: the
// cluster's, which the plan settles later): on GPUs several ranks need NCCL as well, and a
// machine missing both the driver and NCCL is told both.
func checkRunDevice(device string, ranks int) error {
	if device != gpu.Device.String() || ranks < 2 {
		return checkDevice(device)
	}
	missing := errors.Join(gpu.CheckDriver(), gpu.CheckNCCL())
	if missing != nil {
		return diag.RuntimeWrap(diag.CodeUnsupportedFeature, missing, "--device cuda on %d ranks", ranks)
	}
	return nil
}

// precisionFlag adds --precision to a decoding command's flags.
func precisionFlag(f *pflag.FlagSet, v *string) {
	f.StringVar(v, "precision", "fp32", "with --device: fp32, or bf16 (the weight products on the tensor cores in bfloat16 with float32 sums, over float32 weights)")
}

// checkPrecision reads --precision: bf16 or fp32; bf16 needs --device (the CPU decodes in
// fp32). Anything else is a usage error.
func checkPrecision(precision, device string) (bf16 bool, err error) {
	switch precision {
	case "fp32":
		return false, nil
	case "bf16":
		if device == "" {
			return false, usage(diag.Runtimef(diag.CodeBadRunOption, "--precision bf16 runs the GPU's bf16 products: give --device cuda (or cuda-emulated); the CPU decodes in fp32"))
		}
		return true, nil
	}
	return false, usage(diag.Runtimef(diag.CodeBadRunOption, "--precision %s: want fp32 or bf16", precision))
}
