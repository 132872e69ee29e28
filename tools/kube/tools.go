//go:build tools

// Package kube only pins the control plane's commands; scripts/lib/env.sh builds them with
// `go build k8s.io/kubernetes/cmd/<name>`.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubectl/pkg/cmd"
)
