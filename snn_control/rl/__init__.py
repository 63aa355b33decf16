"""Model-free spiking RL (Van den Berghe et al. 2025; Xu et al. 2025 (Proxy Target)): TD3
with a population-coded spiking actor, a proxy or Polyak target actor, surrogate-slope
schedules and a privileged guide."""
