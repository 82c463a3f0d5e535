// Package catalog is moec's table of devices: memory, peak dense FLOP/s per precision, HBM
// bandwidth, intra-node link and host-to-device bandwidth, each with its source.
//
// In: a device name from a `cluster { gpu = ... }` declaration.
// Out: a program.Device the cluster may override field by field.
package catalog
