package diag

var runtimeCodes = []Info{}
