package human

import (
	"math"
	"testing"
)

func TestCount(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want string
	}{
		{0, "0"},
		{17, "17"},
		{999, "999"},
		{0.25, "0.25"},
		{2.5, "2.5"},
		{1000, "1k"},
		{2560, "2.56k"},
		{999_499, "999k"},
		{999_700, "1M"}, // rounding reaches 1000k: move up a unit
		{337_920_000, "338M"},
		{12_879_921_152, "12.9B"},
		{46_702_792_704, "46.7B"},
		{1_570_000_000_000, "1.57T"},
		{2.5e15, "2500T"},
		{-46_702_792_704, "-46.7B"},
		{math.Inf(1), "+Inf"},
	} {
		if got := Count(tc.in); got != tc.want {
			t.Errorf("Count(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestBytes(t *testing.T) {
	for _, tc := range []struct {
		in   int64
		want string
	}{
		{0, "0 B"},
		{512, "512 B"},
		{1023, "1023 B"},
		{1024, "1 KiB"},
		{1536, "1.5 KiB"},
		{1_024_000, "0.977 MiB"}, // 1000 KiB would need four digits
		{1_048_064, "1 MiB"},     // 1023.5 KiB
		{461 << 20, "461 MiB"},
		{40 << 30, "40 GiB"},
		{17_200 << 30, "16.8 TiB"},
		{1 << 62, "4 EiB"},
		{-2048, "-2 KiB"},
	} {
		if got := Bytes(tc.in); got != tc.want {
			t.Errorf("Bytes(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestExact(t *testing.T) {
	for _, tc := range []struct {
		in   int64
		want string
	}{
		{0, "0"},
		{999, "999"},
		{1000, "1,000"},
		{46_702_792_704, "46,702,792,704"},
		{-1_234_567, "-1,234,567"},
		{math.MinInt64, "-9,223,372,036,854,775,808"},
	} {
		if got := Exact(tc.in); got != tc.want {
			t.Errorf("Exact(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSI(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		unit string
		want string
	}{
		{0, "FLOP", "0 FLOP"},
		{0.5, "FLOP", "0.5 FLOP"},
		{2.576e10, "FLOP", "25.8 GFLOP"},
		{3.12e14, "FLOP/s", "312 TFLOP/s"},
		{3.14e23, "FLOP", "314 ZFLOP"},
		{999.9e9, "B", "1 TB"},
		{2.5e9, "B", "2.5 GB"},
	} {
		if got := SI(tc.in, tc.unit); got != tc.want {
			t.Errorf("SI(%v, %q) = %q, want %q", tc.in, tc.unit, got, tc.want)
		}
	}
}
