#!/bin/sh
# Register a namespace and custom search attributes (all Keyword) on a running Temporal.
#   setup-namespace.sh NAMESPACE ATTRIBUTE...
# Runs in the temporalio/admin-tools image once the server is up (docker-compose.yml's
# `temporal-setup`); the server's address comes from TEMPORAL_ADDRESS. It waits for the
# server, retries each step (a new namespace takes a few seconds to become usable), and is
# safe to run again: an existing namespace is kept, and creating an attribute that already
# exists with the same type succeeds. An attribute registered with another type fails.
set -eu

address="${TEMPORAL_ADDRESS:?set TEMPORAL_ADDRESS, e.g. temporal:7233}"
attempts="${SETUP_ATTEMPTS:-90}"
pause="${SETUP_PAUSE_SECONDS:-2}"

if [ "$#" -lt 2 ]; then
    echo "usage: $0 NAMESPACE ATTRIBUTE..." >&2
    exit 2
fi
namespace="$1"
shift

temporal_cli() {
    temporal --address "$address" "$@"
}

# retry WHAT COMMAND...: run COMMAND until it succeeds, at most $attempts times.
retry() {
    what="$1"
    shift
    n=1
    until "$@"; do
        if [ "$n" -ge "$attempts" ]; then
            echo "temporal setup: gave up after $n attempts: $what" >&2
            return 1
        fi
        n=$((n + 1))
        sleep "$pause"
    done
}

ensure_namespace() {
    temporal_cli operator namespace describe --namespace "$namespace" >/dev/null 2>&1 ||
        temporal_cli operator namespace create --namespace "$namespace"
}

create_keyword() {
    temporal_cli operator search-attribute create --namespace "$namespace" \
        --name "$1" --type Keyword
}

has_keyword() {
    temporal_cli operator search-attribute list --namespace "$namespace" -o json |
        grep -q "\"$1\": \"INDEXED_VALUE_TYPE_KEYWORD\""
}

echo "temporal setup: waiting for $address"
retry "Temporal at $address" temporal_cli operator cluster health
retry "namespace $namespace" ensure_namespace
for name in "$@"; do
    retry "search attribute $name" create_keyword "$name"
    has_keyword "$name" || {
        echo "temporal setup: $name is not a Keyword search attribute" >&2
        exit 1
    }
    echo "temporal setup: $name (Keyword) on $namespace"
done
echo "temporal setup: done"
