package codegen

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/codegen/llvm"
	"github.com/moec-dev/moec/compiler/features"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/atomicfile"
	"github.com/moec-dev/moec/kernels"
)

// Options tune Emit.
type Options struct {
	// Clang is the clang executable for the CPU kernels; "" looks for clang, clang-19 ...
	// clang-14 on PATH.
	Clang string
	// NoCompile writes sources only, even when clang is available.
	NoCompile bool
}

// Result says what Emit wrote and compiled.
type Result struct {
	Files      []string // paths written (outDir joined with the fixed file names), in a fixed order
	Name       string   // the sanitised kernel-set name used in generated code
	ClangFound bool     // a clang was found (or given)
	Clang      string   // its path
	Compiled   []string // compiled outputs (under outDir): the object and the shared library
	Notes      []string // what a user should know: clang missing, dense stage, ...
	// Gaps are the features of the model that the generated CUDA and LLVM kernels do not
	// honour or only approximate (their columns of compiler/features), in table order:
	// the kernels are written all the same, and the caller reports these (moec build
	// warns with W9501) so that a router that ignores, say, node-limited routing is never
	// generated silently.
	Gaps []features.Gap
}

// File names inside outDir. They are fixed: names from the .moe file never reach paths.
const (
	CUDADir     = "cuda"
	LLVMDir     = "llvm"
	CUDAKernels = "moe_kernels.cu"
	CUDAHost    = "moe_host.cu"
	CUDAHeader  = "moe_kernels.h"
	LLVMModule  = "moe_kernels.ll"
	LLVMObject  = "moe_kernels.o"
	LLVMLibrary = "libmoe_kernels.so"
)

// Emit writes the kernels of one stage's model (callers name outDir with SanitizePath): outDir/cuda/{moe_kernels.cu, moe_host.cu,
// moe_kernels.h, moec_clang_prelude.h} and outDir/llvm/moe_kernels.ll, and when clang is
// found, outDir/llvm/moe_kernels.o and libmoe_kernels.so. m is the stage's model
// (program.StageModel); modelName and stageName only label the output.
func Emit(outDir, modelName, stageName string, m *program.Model, opt Options) (Result, error) {
	return EmitContext(context.Background(), outDir, modelName, stageName, m, opt)
}

// EmitContext is Emit with a context that bounds the clang runs.
func EmitContext(ctx context.Context, outDir, modelName, stageName string, m *program.Model, opt Options) (Result, error) {
	res := Result{Name: Ident(modelName, stageName)}
	sh, err := kernels.ShapeOf(m)
	if err != nil {
		return res, fmt.Errorf("codegen: model %s: %w", res.Name, err)
	}
	if m.MoE == nil {
		res.Notes = append(res.Notes, "dense stage: kernels are generated for one expert of the FFN's width")
	}
	res.Gaps = KernelGaps(m)
	files, err := Generate(res.Name, sh)
	if err != nil {
		return res, err
	}
	for _, f := range files {
		path := filepath.Join(outDir, f.Path)
		if err := WriteFileAtomic(path, []byte(f.Text)); err != nil {
			return res, fmt.Errorf("codegen: %w", err)
		}
		res.Files = append(res.Files, path)
	}
	res.Clang = opt.Clang
	if res.Clang == "" {
		res.Clang = llvm.FindClang()
	}
	res.ClangFound = res.Clang != ""
	switch {
	case opt.NoCompile:
		res.Notes = append(res.Notes, "compilation of the LLVM kernels skipped (NoCompile)")
	case !res.ClangFound:
		res.Notes = append(res.Notes, "clang not found on PATH: LLVM kernels written but not compiled; the runtime uses its Go kernels")
	default:
		dir := filepath.Join(outDir, LLVMDir)
		ll, obj, so := filepath.Join(dir, LLVMModule), filepath.Join(dir, LLVMObject), filepath.Join(dir, LLVMLibrary)
		// Compile beside the final names, then rename, so a reader never sees half a library.
		if err := llvm.CompileObject(ctx, res.Clang, ll, obj+".tmp"); err != nil {
			return res, fmt.Errorf("codegen: compile LLVM kernels: %w", err)
		}
		if err := os.Rename(obj+".tmp", obj); err != nil {
			return res, fmt.Errorf("codegen: %w", err)
		}
		if err := llvm.LinkShared(ctx, res.Clang, so+".tmp", obj); err != nil {
			return res, fmt.Errorf("codegen: link LLVM kernels: %w", err)
		}
		if err := os.Rename(so+".tmp", so); err != nil {
			return res, fmt.Errorf("codegen: %w", err)
		}
		res.Compiled = []string{obj, so}
	}
	return res, nil
}

// KernelGaps lists the features of m that the generated kernels do not honour or only
// approximate: the CUDA column of compiler/features, then the LLVM column (the two lower
// the same kernel descriptions, so their gaps pair up).
func KernelGaps(m *program.Model) []features.Gap {
	return append(features.Check(m, features.CUDA, features.Layout{}), features.Check(m, features.LLVM, features.Layout{})...)
}

// File is one generated file: a path relative to the output directory and its text.
type File struct {
	Path string
	Text string
}

// Generate returns the generated sources for a kernel shape, without writing them. name
// must already be sanitised (Ident).
func Generate(name string, sh kernels.Shape) ([]File, error) {
	ks, err := kernels.Set(sh)
	if err != nil {
		return nil, fmt.Errorf("codegen: %w", err)
	}
	cu, err := cuda.Source(name, ks)
	if err != nil {
		return nil, fmt.Errorf("codegen: %w", err)
	}
	host, err := cuda.Host(name, ks)
	if err != nil {
		return nil, fmt.Errorf("codegen: %w", err)
	}
	ll, err := llvm.Module(name, ks)
	if err != nil {
		return nil, fmt.Errorf("codegen: %w", err)
	}
	return []File{
		{filepath.Join(CUDADir, CUDAKernels), cu},
		{filepath.Join(CUDADir, CUDAHost), host},
		{filepath.Join(CUDADir, CUDAHeader), cuda.HeaderFile(name, sh, ks)},
		{filepath.Join(CUDADir, cuda.PreludeName), cuda.Header + "\n" + cuda.Prelude()},
		{filepath.Join(LLVMDir, LLVMModule), ll},
	}, nil
}

// WriteFileAtomic writes data to path through a synced temporary file in the same
// directory and a rename (internal/atomicfile), creating the directory if needed.
func WriteFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o644)
}
