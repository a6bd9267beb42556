#!/usr/bin/env bash
# Apply a Kustomize overlay, wait for the daemon's rollout, print its probe status.
#
#   deploy/deploy.sh <dev|staging|prod> [--image REPO/NAME[:TAG][@sha256:D] | --digest sha256:D]
#                    [--context CTX] [--timeout 300s] [--dry-run] [--render-only]
#   deploy/deploy.sh <env> --rollback [--context CTX]
#
#   --image        run this image instead of the overlay's (e.g. a CI build's tag or digest)
#   --digest       run the overlay's image at this digest (fills prod's placeholder)
#   --context      kubectl context (default: the current one)
#   --dry-run      server-side dry run: the API server validates, nothing changes
#   --render-only  print the manifests that would be applied and exit (no cluster needed)
#   --rollback     `kubectl rollout undo` the daemon to its previous revision and wait
#
# prod runs its image by digest only: without --digest or an --image ending in
# @sha256:<digest> nothing is applied. A dev overlay that uses the Secret redis-auth gets
# it created once, with a random password, if the namespace lacks it. ServiceMonitor and
# PrometheusRule are applied only when the cluster has the Prometheus Operator CRDs
# (monitoring.coreos.com); otherwise they are skipped with a warning.
# Needs kubectl (with its built-in kustomize), awk and od. See docs/deploy.md.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEPLOYMENT=safetyamp-sync
CRONJOB=safetyamp-sync-batch
DIGEST_ENVS=" prod "     # overlays whose image must be a digest (k8s/overlays/prod)
PLACEHOLDER_DIGEST="sha256:0000000000000000000000000000000000000000000000000000000000000000"
# RFC 5737 documentation ranges: the overlays' placeholder egress destinations
PLACEHOLDER_CIDRS='cidr: "?(192\.0\.2|198\.51\.100|203\.0\.113)\.'

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
die() { printf 'deploy: %s\n' "$*" >&2; exit 1; }
say() { printf '\n== %s\n' "$*"; }

[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage 0 ;; esac
ENV="$1"; shift
IMAGE="" DIGEST="" CONTEXT="" TIMEOUT="300s" DRY_RUN=0 RENDER_ONLY=0 ROLLBACK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --image) IMAGE="${2:?--image needs a value}"; shift 2 ;;
    --digest) DIGEST="${2:?--digest needs a value}"; shift 2 ;;
    --context) CONTEXT="${2:?--context needs a value}"; shift 2 ;;
    --timeout) TIMEOUT="${2:?--timeout needs a value}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --render-only) RENDER_ONLY=1; shift ;;
    --rollback) ROLLBACK=1; shift ;;
    -h|--help) usage 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

[ -z "$IMAGE" ] || [ -z "$DIGEST" ] || die "give --image or --digest, not both"
if [ -n "$DIGEST" ] && ! [[ "$DIGEST" =~ ^sha256:[0-9a-f]{64}$ ]]; then
  die "--digest must be sha256:<64 hex digits> (the image is then run by digest), got $DIGEST"
fi

OVERLAY="$ROOT/k8s/overlays/$ENV"
[ -f "$OVERLAY/kustomization.yaml" ] || die "no overlay $ENV (have: $(cd "$ROOT/k8s/overlays" && printf '%s ' */))"
command -v kubectl >/dev/null || die "kubectl is not installed"
KUBECTL=(kubectl)
[ -n "$CONTEXT" ] && KUBECTL+=(--context "$CONTEXT")
NAMESPACE="$(awk '/^namespace:/ {print $2; exit}' "$OVERLAY/kustomization.yaml")"
[ -n "$NAMESPACE" ] || die "$OVERLAY/kustomization.yaml sets no namespace"

# Drop the YAML documents of one API group from a multi-document stream.
without_group() { awk -v group="$1" 'BEGIN { RS = "\n---\n"; ORS = "\n---\n" } $0 !~ ("(^|\n)apiVersion: " group "/")'; }
# Keep only the YAML documents of one kind.
only_kind() { awk -v kind="$1" 'BEGIN { RS = "\n---\n"; ORS = "\n---\n" } $0 ~ ("(^|\n)kind: " kind "(\n|$)")'; }

render() {
  local out
  out="$(kubectl kustomize "$OVERLAY")"
  if [ -n "$IMAGE" ]; then
    # The daemon's and the CronJob's image: whatever the overlay set for safetyamp-sync.
    out="$(printf '%s\n' "$out" | sed -E "s#^([[:space:]]*image: )[^[:space:]]*/?safetyamp-sync([:@][^[:space:]]*)?\$#\\1${IMAGE}#")"
  elif [ -n "$DIGEST" ]; then
    # The overlay's repository at this digest (a tag, if any, is dropped: the digest rules).
    out="$(printf '%s\n' "$out" | sed -E "s#^([[:space:]]*image: )([^[:space:]@]*/?safetyamp-sync)(:[^[:space:]@]*)?(@[^[:space:]]*)?\$#\\1\\2@${DIGEST}#")"
  fi
  printf '%s\n' "$out"
}

probe() {  # probe POD PATH: GET http://127.0.0.1:8080PATH inside the pod (the image has python, no curl)
  "${KUBECTL[@]}" -n "$NAMESPACE" exec "$1" -c safetyamp-sync -- python -c "
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen('http://127.0.0.1:8080$2', timeout=10); code, body = r.status, r.read()
except urllib.error.HTTPError as e:
    code, body = e.code, e.read()
print(code, body.decode(errors='replace')[:3000])
" 2>&1 || true
}

status() {
  say "pods in $NAMESPACE"
  "${KUBECTL[@]}" -n "$NAMESPACE" get pods -l "app.kubernetes.io/name=safetyamp-sync" -o wide || true
  local pod
  pod="$("${KUBECTL[@]}" -n "$NAMESPACE" get pods -l "app.kubernetes.io/component=daemon" \
        --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)"
  if [ -z "$pod" ]; then
    echo "no running daemon pod"; return 1
  fi
  say "probe status of $pod"
  "${KUBECTL[@]}" -n "$NAMESPACE" get pod "$pod" \
    -o jsonpath='{range .status.conditions[*]}{.type}={.status}{"  "}{end}{"\n"}restarts={.status.containerStatuses[0].restartCount}{"\n"}'
  printf '/live   -> '; probe "$pod" /live
  printf '/ready  -> '; probe "$pod" /ready
  printf '/health -> '; probe "$pod" /health
  say "CronJob"
  "${KUBECTL[@]}" -n "$NAMESPACE" get cronjob "$CRONJOB" || true
}

if [ "$ROLLBACK" = 1 ]; then
  say "rolling $DEPLOYMENT in $NAMESPACE back to its previous revision"
  "${KUBECTL[@]}" -n "$NAMESPACE" rollout history "deployment/$DEPLOYMENT"
  "${KUBECTL[@]}" -n "$NAMESPACE" rollout undo "deployment/$DEPLOYMENT"
  "${KUBECTL[@]}" -n "$NAMESPACE" rollout status "deployment/$DEPLOYMENT" --timeout="$TIMEOUT"
  status
  echo
  echo "The CronJob and ConfigMap are not rolled back by 'rollout undo': re-run this script"
  echo "with the previous --image (or from the previous git revision) to align them."
  exit 0
fi

# Create a Secret holding one random value (64 hex characters: safe inside a URL) unless
# the namespace has it already; the value goes to kubectl on stdin, never on a command line.
ensure_random_secret() {  # ensure_random_secret NAME KEY
  if "${KUBECTL[@]}" -n "$NAMESPACE" get secret "$1" >/dev/null 2>&1; then
    return 0
  fi
  # The Secret's namespace must exist first: apply the overlay's Namespace on its own.
  printf '%s\n' "$MANIFESTS" | only_kind Namespace | "${KUBECTL[@]}" apply -f - >/dev/null
  local value
  value="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
  [ "${#value}" = 64 ] || die "could not read 32 random bytes from /dev/urandom"
  printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\ntype: Opaque\nstringData:\n  %s: %s\n' \
    "$1" "$NAMESPACE" "$2" "$value" | "${KUBECTL[@]}" create -f - >/dev/null
  say "created Secret $1 in $NAMESPACE (random $2; kept in the cluster only)"
}

MANIFESTS="$(render)"
if grep -q 'azure.workload.identity/client-id: "\{0,1\}00000000-0000-0000-0000-' <<<"$MANIFESTS"; then
  echo "deploy: WARNING: the ServiceAccount still has a placeholder workload-identity client id;" >&2
  echo "        set your managed identity's client id in k8s/overlays/$ENV (docs/deploy.md)." >&2
fi
if grep -Eq "$PLACEHOLDER_CIDRS" <<<"$MANIFESTS"; then
  echo "deploy: WARNING: the NetworkPolicy still has a placeholder egress destination" >&2
  echo "        ($(grep -Eo "${PLACEHOLDER_CIDRS}[0-9./]*" <<<"$MANIFESTS" | sed 's/cidr: //' | sort -u | paste -sd ' ' -)): SQL Server or Redis" >&2
  echo "        is unreachable until you set its address in k8s/overlays/$ENV (docs/deploy.md, 'Network policy')." >&2
fi
images="$(grep -Eo 'image: [^[:space:]]*safetyamp-sync[^[:space:]]*' <<<"$MANIFESTS" | sed 's/^image: //' | sort -u)"
if [[ "$DIGEST_ENVS" == *" $ENV "* ]]; then
  while read -r image; do
    if [[ "$image" == *"@$PLACEHOLDER_DIGEST" ]] || ! [[ "$image" =~ @sha256:[0-9a-f]{64}$ ]]; then
      if [ "$RENDER_ONLY" = 1 ]; then
        echo "deploy: WARNING: $image is not a real digest (placeholder image digest); $ENV is deployed by digest." >&2
      else
        die "$ENV runs its image by digest, and $image is not one: pass --digest sha256:<digest> or --image <repo>@sha256:<digest> (docs/deploy.md, 'Image pins')"
      fi
    fi
  done <<<"$images"
fi
if [ "$RENDER_ONLY" = 1 ]; then
  printf '%s\n' "$MANIFESTS"
  exit 0
fi

if ! "${KUBECTL[@]}" api-resources --api-group=monitoring.coreos.com -o name 2>/dev/null | grep -q '^servicemonitors\.'; then
  echo "deploy: WARNING: no Prometheus Operator CRDs (monitoring.coreos.com) in this cluster:" >&2
  echo "        ServiceMonitor and PrometheusRule are skipped (docs/deploy.md, 'Monitoring')." >&2
  MANIFESTS="$(printf '%s\n' "$MANIFESTS" | without_group monitoring.coreos.com)"
fi

APPLY=("${KUBECTL[@]}" apply -f -)
MODE=""
if [ "$DRY_RUN" = 1 ]; then
  APPLY+=(--dry-run=server)
  MODE=" (server dry run)"
fi
if grep -q 'name: redis-auth' <<<"$MANIFESTS"; then
  if [ "$DRY_RUN" = 1 ]; then
    echo "deploy: dry run: the Secret redis-auth is not created (a real run creates it if missing)" >&2
  else
    ensure_random_secret redis-auth password
  fi
fi
say "applying overlay $ENV to namespace $NAMESPACE$MODE"
printf '%s\n' "$MANIFESTS" | "${APPLY[@]}"
[ "$DRY_RUN" = 1 ] && exit 0

say "waiting for the rollout of $DEPLOYMENT (timeout $TIMEOUT)"
if ! "${KUBECTL[@]}" -n "$NAMESPACE" rollout status "deployment/$DEPLOYMENT" --timeout="$TIMEOUT"; then
  status || true
  say "recent events"
  "${KUBECTL[@]}" -n "$NAMESPACE" get events --sort-by=.lastTimestamp | tail -20 || true
  die "rollout did not finish; roll back with: deploy/deploy.sh $ENV --rollback"
fi
status
