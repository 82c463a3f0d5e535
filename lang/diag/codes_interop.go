package diag

// Codes of the interoperability commands (moec import, moec export; package interop/hf):
// E09xx.
//
// Append only: a published code keeps its number and meaning. A code is one constant
// and one entry in interopCodes, each on its own line, in code order.

const CodeBadHFConfig Code = "E0901"
const CodeUnknownArchitecture Code = "E0902"
const CodeInexpressible Code = "E0903"
const CodeWeightsMismatch Code = "E0904"
const CodeNotExportable Code = "E0905"

var interopCodes = []Info{
	{CodeBadHFConfig, "a Hugging Face config.json field has the wrong type or an impossible value"},
	{CodeUnknownArchitecture, "config.json names an architecture moec does not import"},
	{CodeInexpressible, "a config.json field describes something the .moe language cannot express"},
	{CodeWeightsMismatch, "a Hugging Face checkpoint's tensors do not match its config"},
	{CodeNotExportable, "a checkpoint cannot be exported"},
}
