"""Beyond one clean step: failures, checkpoints and goodput over a whole training run.

`spec` resolves the scenario's `reliability:` block against its presets; `failures` turns the
per-unit rates into the cluster's interruption rate; `checkpoint` sizes and times checkpoints
and finds the best interval; `links` simulates a step with degraded links; `montecarlo` runs
the whole training run many times (numpy, seeded); `goodput` ties them to one simulated step;
`outputs` and `commands` are the `hwsim goodput` command's files and printing.
"""
