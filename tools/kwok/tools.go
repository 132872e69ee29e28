//go:build tools

// Package kwok only pins kwok; scripts/lib/env.sh builds `sigs.k8s.io/kwok/cmd/kwok` and copies
// the stage files that ship in its module.
package kwok

import _ "sigs.k8s.io/kwok/pkg/kwok/cmd"
