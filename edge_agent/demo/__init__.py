"""The demo: simulated devices, a local broker and a verifying subscriber; the slip generator and sample slips."""
