package cudastep

import (
	"fmt"
	"slices"
	"strings"

	"github.com/moec-dev/moec/codegen/cuda"
)

// How a lowered program's sources (Sources) become what runs: the command lines
// runtime/gpu runs, and the Makefile `moec build` writes next to the sources so that a
// person can rebuild and read the same artefacts without moec.

// Names of the libraries the host program compiles into.
const (
	HostLibrary     = "libmoec_step.so"     // on a GPU: the host program with the dlopen fillings
	EmulatedLibrary = "libmoec_step_emu.so" // under the CPU emulation
)

// EmulationFlags are clang++'s flags for every C++ source of the CPU emulation (the host
// program, the emulated driver and NCCL, each kernel file's trampolines).
func EmulationFlags() []string {
	return []string{"-std=c++17", "-O1", "-Wall", "-fPIC", "-include", "moec_cpu_emu.h", "-I", "."}
}

// EmulationSources are the emulation's sources besides the host program, for the kernel
// files kernels: each compiles to an object of the same base name.
func EmulationSources(kernels []KernelFile) []string {
	out := []string{DriverEmuName, NCCLEmuName, EmuRegistryName}
	for _, f := range kernels {
		out = append(out, EmulationName(f))
	}
	return out
}

// DeviceHostArgs are clang++'s arguments that compile the host program for a GPU into
// the shared library out: the driver API and NCCL filled through dlopen at run time, so
// nothing of CUDA is needed to build it (threads for the host AdamW, offload.go).
func DeviceHostArgs(out string) []string {
	return []string{"-std=c++17", "-O2", "-Wall", "-Werror", "-fPIC", "-shared", "-I", ".",
		HostName, DriverDlopenName, NCCLDlopenName, "-o", out, "-ldl", "-lm", "-pthread"}
}

// Makefile is a Makefile over l's sources (as Sources writes them, with codegen/cuda's
// prelude and emulation header beside them): `make ptx` compiles every kernel file to
// PTX for each of archs, `make host` the host program for a GPU, `make emulated` the
// host program with the kernels under the CPU emulation; clang++ is $(CLANG). The
// commands are runtime/gpu's. header heads the file as comment lines.
func Makefile(kernels []KernelFile, archs []string, header string) string {
	var w strings.Builder
	for _, line := range strings.Split(strings.TrimRight(header, "\n"), "\n") {
		fmt.Fprintf(&w, "# %s\n", line)
	}
	w.WriteString("\nCLANG ?= clang++-16\n\n.PHONY: all ptx host emulated clean\n\nall: ptx host\n\n")
	headers := strings.Join([]string{DeviceHeaderName, cuda.PreludeName}, " ")
	var ptx []string
	rules := &strings.Builder{}
	for _, arch := range archs {
		for _, f := range kernels {
			out := strings.TrimSuffix(f.Name, ".cu") + "." + arch + ".ptx"
			ptx = append(ptx, out)
			fmt.Fprintf(rules, "%s: %s %s\n\t$(CLANG) %s\n\n", out, f.Name, headers, strings.Join(PTXArgs(arch, f.Name, out), " "))
		}
	}
	fmt.Fprintf(&w, "ptx: %s\n\n", strings.Join(ptx, " "))
	w.WriteString(rules.String())
	hostDeps := strings.Join([]string{HostName, DriverDlopenName, NCCLDlopenName, DriverHeaderName, NCCLHeaderName}, " ")
	fmt.Fprintf(&w, "host: %s\n\n%s: %s\n\t$(CLANG) %s\n\n", HostLibrary, HostLibrary, hostDeps, strings.Join(DeviceHostArgs(HostLibrary), " "))
	flags := strings.Join(EmulationFlags(), " ")
	var objs []string
	for _, src := range EmulationSources(kernels) {
		obj := strings.TrimSuffix(src, ".cpp") + ".o"
		objs = append(objs, obj)
		fmt.Fprintf(&w, "%s: %s moec_cpu_emu.h\n\t$(CLANG) %s -c %s -o %s\n\n", obj, src, flags, src, obj)
	}
	link := slices.Concat(EmulationFlags(), []string{"-shared", HostName}, objs, []string{"-o", EmulatedLibrary, "-lpthread", "-lm"})
	fmt.Fprintf(&w, "emulated: %s\n\n%s: %s %s\n\t$(CLANG) %s\n\n", EmulatedLibrary, EmulatedLibrary, HostName, strings.Join(objs, " "), strings.Join(link, " "))
	fmt.Fprintf(&w, "clean:\n\trm -f *.ptx *.o %s %s\n", HostLibrary, EmulatedLibrary)
	return w.String()
}
