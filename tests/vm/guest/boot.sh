#!/usr/bin/env bash
# The smallest guest test: the VM came up and ran a script. tests/vm/boot-rate.sh boots it
# repeatedly to measure how often the guest fails to come up.
echo "guest up: $(uname -r)"
