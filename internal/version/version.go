// Package version carries the build's version string, set by the linker.
package version

// Version is overridden at build time with -ldflags "-X ...version.Version=...".
var Version = "dev"

// APIVersion is the EC2 API version the controller speaks.
const APIVersion = "2016-11-15"
