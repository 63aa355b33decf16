"""Model-free spiking RL (seeds 002 and 003): TD3 with a population-coded spiking actor,
a proxy or Polyak target actor, surrogate-slope schedules and a privileged guide."""
