#!/bin/sh
# Registers $TEMPORAL_NAMESPACE once the frontend answers health checks; does nothing if
# it exists. Run by the `temporal-namespace` service of docker-compose.yml.
set -eu

namespace=${TEMPORAL_NAMESPACE:-default}
attempt=1
until temporal operator cluster health --address "$TEMPORAL_ADDRESS"; do
    if [ "$attempt" -ge 30 ]; then
        echo "Temporal at $TEMPORAL_ADDRESS not healthy after $attempt attempts" >&2
        exit 1
    fi
    attempt=$((attempt + 1))
    sleep 2
done
if temporal operator namespace describe --address "$TEMPORAL_ADDRESS" -n "$namespace" >/dev/null 2>&1; then
    echo "namespace $namespace exists"
else
    temporal operator namespace create --address "$TEMPORAL_ADDRESS" -n "$namespace"
    echo "namespace $namespace created"
fi

# The deploys' and releases' search attributes (contract/src/search.rs, REGISTERED): what the
# Temporal UI filters by.
for entry in SignalboxService:Keyword SignalboxEnvironment:Keyword SignalboxStrategy:Keyword \
    SignalboxArtifactDigest:Keyword SignalboxGitSha:Keyword SignalboxPhase:Keyword \
    SignalboxDeployer:Keyword SignalboxRelease:Keyword SignalboxPipeline:Keyword \
    SignalboxStage:Keyword SignalboxServices:KeywordList; do
    attribute="${entry%%:*}"
    if temporal operator search-attribute list --address "$TEMPORAL_ADDRESS" -n "$namespace" | grep -qw "$attribute"; then
        echo "search attribute $attribute exists"
    else
        temporal operator search-attribute create --address "$TEMPORAL_ADDRESS" -n "$namespace" \
            --name "$attribute" --type "${entry#*:}"
    fi
done
