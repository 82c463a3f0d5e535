package step

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
)

// ropeAttr is a rotary op's attribute: its base and, with a rope scaling, the scaling's
// type, factor and pretrained context, so program.txt says which frequencies the kernel
// rotates by (program.Model.RopeFrequencies computes them).
func ropeAttr(m *program.Model) string {
	attr := fmt.Sprintf("base=%g", m.RopeBase)
	if rs := m.RopeScaling; rs != nil {
		attr += fmt.Sprintf(",scaling=%s,factor=%g", rs.Type, rs.Factor)
		if rs.OriginalSeqLen > 0 {
			attr += fmt.Sprintf(",original=%d", rs.OriginalSeqLen)
		}
	}
	return attr
}
