#!/usr/bin/env bash
# Placeholder until the logserver lands: says what `make run` will do.
echo "make run will start three logserver members on 127.0.0.1:8400-8402 and form a Raft cluster."
echo "The logserver is not built yet (see the open logserver issue); nothing was started."
