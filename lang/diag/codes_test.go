package diag

import "testing"

// TestRegistry: every code is registered once, with a summary and a phase `moec explain`
// can name, and Lookup finds it in any case.
func TestRegistry(t *testing.T) {
	seen := map[Code]bool{}
	for _, info := range Registry() {
		if seen[info.Code] {
			t.Errorf("%s registered twice", info.Code)
		}
		seen[info.Code] = true
		if info.Summary == "" {
			t.Errorf("%s has no summary", info.Code)
		}
		if p := info.Code.Phase(); p == "unknown" || p == "warnings" {
			t.Errorf("%s: no phase owns its number", info.Code)
		}
		if got, ok := Lookup(string(info.Code)); !ok || got != info {
			t.Errorf("Lookup(%s) = %v, %v", info.Code, got, ok)
		}
	}
	if _, ok := Lookup("e0509"); !ok {
		t.Error("Lookup is case-sensitive")
	}
	if _, ok := Lookup("E9999"); ok {
		t.Error("Lookup found an unregistered code")
	}
	if Code("W9501").Severity() != "warning" || Code("E0101").Severity() != "error" {
		t.Error("severity by prefix")
	}
}
