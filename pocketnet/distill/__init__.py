"""Knowledge distillation: teacher bank, frozen teacher, KD losses, feature hooks, multi-step
schedule and the teacher-output cache."""
