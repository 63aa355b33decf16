"""What both ways to train share: rollouts of any policy in a batched env, the held-out
evaluation and its robustness suite, plots. Neither trainer (predictive/, rl/) imports the
other; both import this."""
