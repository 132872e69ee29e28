#!/bin/sh
# Declares the compose stack's agent target: one region whose hosts pull from artifact-cache.
set -eu
etcdctl --endpoints=http://etcd:2379 put /signalbox/targets/compose/spec \
  '{"regions": {"local": {"cache": "http://artifact-cache:8082"}}, "report_timeout_ms": 60000}'
