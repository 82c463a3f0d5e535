package hf

import (
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/features"
	"github.com/moec-dev/moec/compiler/features/featuretest"
)

// TestHFColumnAgreesWithExport holds the features table's Hugging Face column to the
// export: a one-feature model goes out in moec's own layout, for a feature of its own,
// iff the column refuses a feature it uses, and the export notes a difference iff the
// column approximates one. ("No class holds this combination" is about the model as a
// whole, not one feature, so it is not counted.)
func TestHFColumnAgreesWithExport(t *testing.T) {
	for _, f := range features.Table() {
		m, err := featuretest.Example(f.Key)
		if err != nil {
			t.Fatal(err)
		}
		var refused, approximated []string
		for _, g := range features.Check(m, features.HF, features.Layout{}) {
			if g.Verdict.Status == features.Refused {
				refused = append(refused, g.Feature.Key)
			} else {
				approximated = append(approximated, g.Feature.Key)
			}
		}
		_, gaps := layoutFor(m)
		var own []string
		for _, g := range gaps {
			if !strings.HasPrefix(g, "no class moec writes holds this combination") {
				own = append(own, g)
			}
		}
		if (len(own) > 0) != (len(refused) > 0) {
			t.Errorf("%s: the export's gaps %q; the table refuses %v", f.Key, own, refused)
		}
		if notes := exportNotes(m); (len(notes) > 0) != (len(approximated) > 0) {
			t.Errorf("%s: the export notes %q; the table approximates %v", f.Key, notes, approximated)
		}
	}
}
