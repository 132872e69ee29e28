#!/bin/sh
# Declares the compose stack's agent target: one region whose hosts pull from artifact-cache.
# etcd takes only mutual TLS: the admin client certificate of deploy/auth/make-dev-auth.sh.
set -eu
etcdctl --endpoints=https://etcd:2379 --cacert=/etc/signalbox/auth/ca.pem \
  --cert=/etc/signalbox/auth/client-admin.pem --key=/etc/signalbox/auth/client-admin-key.pem \
  put /signalbox/targets/compose/spec \
  '{"regions": {"local": {"cache": "http://artifact-cache:8082"}}, "report_timeout_ms": 60000}'
