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

// checkServeDevice is checkDevice for serve, whose batched decoding the CUDA backend
// does not run yet (moec generate --device decodes on the GPU).
func checkServeDevice(device string) error {
	if err := checkDevice(device); err != nil || device == "" {
		return err
	}
	return diag.RuntimeWrap(diag.CodeUnsupportedFeature, errors.New("serving on CUDA is not built yet: moec generate --device decodes on the GPU; serve runs on the CPU without --device"), "--device %s", device)
}
