#!/usr/bin/env python3
"""Sends raw Ethernet frames (one hex string per stdin line) on an interface with AF_PACKET."""
import socket
import sys

s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for line in sys.stdin:
    line = line.strip()
    if line:
        s.send(bytes.fromhex(line))
