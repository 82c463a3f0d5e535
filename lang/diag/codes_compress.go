package diag

// Refusals of `moec compress` (package runtime/compress): runtime refusals, numbered
// apart from the others so that codes added beside them do not collide.
const (
	ErrAlreadyCompressed Code = "E0640" // the checkpoint to compress is already compressed
	ErrBadQuantGroup     Code = "E0641" // a quantisation group does not fit a matrix's input width
	ErrBadPrune          Code = "E0642" // expert pruning asks for more (or fewer) experts than the model can keep
)

var compressCodes = []Info{
	{ErrAlreadyCompressed, "the checkpoint is already compressed (moec compress reads a trained checkpoint)"},
	{ErrBadQuantGroup, "a quantisation group size does not divide a matrix's input width (or is not a multiple of 32)"},
	{ErrBadPrune, "expert pruning keeps more experts than the model has, or fewer than top_k"},
}
