#!/usr/bin/env bash
# Checks the deployment files with no cluster and no container engine:
#   - k8s/: every kustomization renders (kubectl kustomize), every rendered object
#     validates against the Kubernetes schemas (strict: unknown fields fail), the KEDA
#     resources against scripts/deploy/keda.schema.json, and every reference (Secrets,
#     ConfigMaps, selectors, probe ports, scale targets) resolves inside its render;
#   - docker-compose.api.yaml: valid against the Compose specification, references
#     resolve;
#   - Dockerfile: hadolint (.hadolint.yaml);
#   - all of them: checkov's security checks (.checkov.yaml; exceptions justified there
#     or in the resource's checkov.io/skip annotation), and no secret in any of them
#     (DeployGuard's own scanner, `deployguard scan --no-git`).
# Before trusting a pass, each checker is shown a broken file and must reject it.
# scripts/test.sh runs this; the drift test (environment variables against the
# binaries) is a Rust test: worker/tests/it/deploy_config.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/deployguard/target}
scripts/services.sh deploy-tools
TOOLS=$HOME/.cache/deployguard/deploy-venv/bin
KUBERNETES_VERSION=1.37.0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() { printf 'check-deploy: %s\n' "$*" >&2; exit 1; }
step() { printf -- '-- %s\n' "$*"; }

# The overlays read secrets.env and keda.env, which only exist on a deployer's machine:
# render a copy of k8s/ with each example in its place.
cp -r k8s "$work/k8s"
for example in "$work"/k8s/overlays/*/*.env.example; do
  cp "$example" "${example%.example}"
done
mkdir "$work/rendered"

step "kubectl kustomize"
renders=()
while IFS= read -r kustomization; do
  dir=$(dirname "$kustomization")
  rel=${dir#"$work/k8s/"}
  [ "$(basename "$kustomization")" = kustomization.yaml ] || continue
  grep -q '^kind: Component' "$kustomization" && continue
  out="$work/rendered/${rel//\//-}.yaml"
  "$TOOLS/kubectl" kustomize "$dir" >"$out" || fail "k8s/$rel does not render"
  printf '   k8s/%s: %s objects\n' "$rel" "$(grep -c '^kind:' "$out")"
  renders+=("$out")
done < <(find "$work/k8s" -name kustomization.yaml | sort)
[ ${#renders[@]} -ge 3 ] || fail "expected base, standalone and standalone-keda renders"

step "Kubernetes schemas (kubernetes-validate --strict, $KUBERNETES_VERSION)"
validate() {
  local log=$work/validate.log
  if ! "$TOOLS/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "$@" >"$log" 2>&1; then
    cat "$log" >&2
    return 1
  fi
  # Only KEDA's custom resources may lack a schema here; they are checked below.
  if [ -n "$(grep -v 'keda.sh/' "$log" || true)" ]; then
    cat "$log" >&2
    return 1
  fi
}
validate "${renders[@]}" k8s/base/secret.template.yaml || fail "a manifest does not validate"

step "KEDA resources (scripts/deploy/keda.schema.json)"
check() { "$TOOLS/python" scripts/deploy/check_manifests.py "$@"; }
check keda scripts/deploy/keda.schema.json "$work/rendered/overlays-standalone-keda.yaml" ||
  fail "KEDA resources do not validate"

step "references inside each render"
# The base expects the Secret to exist already (secret.template.yaml); the overlays
# generate theirs, so there a missing one is an error.
for out in "${renders[@]}"; do
  external=()
  [ "$(basename "$out")" = base.yaml ] && external=(--external deployguard-secrets)
  check refs "$out" "${external[@]}" || fail "dangling reference in $(basename "$out")"
done

step "Compose specification (check-jsonschema vendor.compose-spec)"
"$TOOLS/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.api.yaml ||
  fail "docker-compose.api.yaml does not validate"
check compose docker-compose.api.yaml || fail "docker-compose.api.yaml has a dangling reference"

step "hadolint"
"$TOOLS/hadolint" --config .hadolint.yaml Dockerfile || fail "Dockerfile lint"

step "checkov"
mkdir "$work/scan"
cp "${renders[@]}" k8s/base/secret.template.yaml Dockerfile docker-compose.api.yaml "$work/scan/"
"$TOOLS/checkov" --config-file .checkov.yaml -d "$work/scan" >"$work/checkov.log" 2>&1 || {
  cat "$work/checkov.log" >&2
  fail "checkov found a problem"
}
grep -E 'scan results|Passed checks' "$work/checkov.log" | paste - - | sed 's/^/   /' || true
for framework in kubernetes dockerfile; do
  grep -q "^$framework scan results" "$work/checkov.log" || fail "checkov did not scan $framework"
done

step "no secrets (deployguard scan --no-git)"
cargo build --quiet --locked -p deployguard-cli --bin deployguard
scanner=$CARGO_TARGET_DIR/debug/deployguard
mkdir "$work/secrets"
cp -r k8s Dockerfile docker-compose.api.yaml .checkov.yaml .hadolint.yaml "$work/secrets/"
"$scanner" scan --no-git "$work/secrets" | sed 's/^/   /' || fail "a secret in the deployment files"

# Each checker must reject a broken file, or its pass above proves nothing.
step "checkers reject broken files"
mkdir "$work/broken"
sed 's/readinessProbe:/readinesProbe:/' "$work/rendered/base.yaml" >"$work/broken/k8s.yaml"
! validate "$work/broken/k8s.yaml" 2>/dev/null || fail "kubernetes-validate passed an unknown field"
sed 's/excludeUnacknowledged/excludeUnacked/' "$work/rendered/overlays-standalone-keda.yaml" \
  >"$work/broken/keda.yaml"
! check keda scripts/deploy/keda.schema.json "$work/broken/keda.yaml" >/dev/null ||
  fail "the KEDA schema passed an unknown field"
sed 's/^  name: deployguard-config$/  name: deployguard-cfg/' "$work/rendered/base.yaml" \
  >"$work/broken/refs.yaml"
! check refs "$work/broken/refs.yaml" --external deployguard-secrets >/dev/null ||
  fail "the reference check passed a missing ConfigMap"
sed 's/condition: service_healthy/condition: service_ready/' docker-compose.api.yaml \
  >"$work/broken/compose.yaml"
! "$TOOLS/check-jsonschema" -q --builtin-schema vendor.compose-spec "$work/broken/compose.yaml" \
  >/dev/null 2>&1 || fail "the Compose schema passed an unknown condition"
sed 's/^USER .*/USER root/' Dockerfile >"$work/broken/Dockerfile"
! "$TOOLS/hadolint" --config .hadolint.yaml "$work/broken/Dockerfile" >/dev/null ||
  fail "hadolint passed a root user"
printf 'DATABASE_URL=postgresql://admin:Zq8vN3pL1xK7wR2m@db.internal:5432/app\nGITHUB_TOKEN=%s\n' \
  "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" >"$work/secrets/leak.env"
! "$scanner" scan --no-git "$work/secrets" >/dev/null || fail "the scanner passed a token"
mkdir "$work/broken/scan"
sed 's/allowPrivilegeEscalation: false/allowPrivilegeEscalation: true/' \
  "$work/rendered/base.yaml" >"$work/broken/scan/base.yaml"
! "$TOOLS/checkov" --config-file .checkov.yaml -d "$work/broken/scan" >/dev/null 2>&1 ||
  fail "checkov passed privilege escalation"

echo "deployment files: ok"
