// Command clipper is the controller, the node agent, the all-in-one cloud and
// the command-line client of Clipper, in one static binary.
package main

import (
	"os"

	"github.com/clipper-cloud/clipper/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
