package diag

// Refusals of `moec compress` (package runtime/compress): runtime refusals, numbered apart
// from the others (E064x) so that codes added beside them do not collide.
//
// Append only: a published code keeps its number and meaning. A code is one constant
// and one entry in compressCodes, each on its own line, in code order.

const CodeAlreadyCompressed Code = "E0640"
const CodeBadQuantGroup Code = "E0641"
const CodeBadPrune Code = "E0642"

var compressCodes = []Info{
	{CodeAlreadyCompressed, "the checkpoint is already compressed (moec compress reads a trained checkpoint)"},
	{CodeBadQuantGroup, "a quantisation group size does not divide a matrix's input width (or is not a multiple of 32)"},
	{CodeBadPrune, "expert pruning keeps more experts than the model has, or fewer than top_k"},
}
