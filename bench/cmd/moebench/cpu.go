package main

import (
	"os"
	"runtime"
	"strings"
)

// cpuDesc is what moebench states about the CPU: its model name and the instruction-set
// features the products could use.
type cpuDesc struct {
	Name  string
	Flags map[string]bool
}

// cpuFeatures are the flags moebench reports, as /proc/cpuinfo spells them, with the name
// the table prints.
func cpuFeatures() []struct{ flag, name string } {
	return []struct{ flag, name string }{
		{"avx2", "AVX2"}, {"fma", "FMA"}, {"avx512f", "AVX-512"}, {"avx512_bf16", "AVX512-BF16"},
		{"avx512_vnni", "AVX512-VNNI"}, {"avx_vnni", "AVX-VNNI"}, {"amx_tile", "AMX"},
		{"amx_bf16", "AMX-BF16"}, {"amx_int8", "AMX-INT8"},
	}
}

// readCPU reads /proc/cpuinfo (the first processor's entry); elsewhere it knows only the
// architecture.
func readCPU() cpuDesc {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return cpuDesc{Name: runtime.GOARCH}
	}
	return parseCPUInfo(string(data))
}

func parseCPUInfo(text string) cpuDesc {
	d := cpuDesc{Name: runtime.GOARCH, Flags: map[string]bool{}}
	seenName, seenFlags := false, false
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "model name":
			if !seenName {
				d.Name, seenName = strings.TrimSpace(v), true
			}
		case "flags":
			if !seenFlags {
				for _, f := range strings.Fields(v) {
					d.Flags[f] = true
				}
				seenFlags = true
			}
		}
	}
	return d
}

// AVX512 reports AVX-512F, without which OpenBLAS's SkylakeX kernels die with SIGILL.
func (d cpuDesc) AVX512() bool { return d.Flags["avx512f"] }

// Features lists every reported feature as "name yes/no".
func (d cpuDesc) Features() string {
	var parts []string
	for _, f := range cpuFeatures() {
		v := "no"
		if d.Flags[f.flag] {
			v = "yes"
		}
		parts = append(parts, f.name+" "+v)
	}
	return strings.Join(parts, ", ")
}
