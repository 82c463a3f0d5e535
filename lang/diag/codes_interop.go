package diag

// Codes of the interoperability commands (moec import, moec export): E09xx. The constants
// that name them live in interop/hf next to the code that raises them.
var interopCodes = []Info{
	{"E0901", "a Hugging Face config.json field has the wrong type or an impossible value"},
	{"E0902", "config.json names an architecture moec does not import"},
	{"E0903", "a config.json field describes something the .moe language cannot express"},
	{"E0904", "a Hugging Face checkpoint's tensors do not match its config"},
	{"E0905", "a checkpoint cannot be exported"},
}
