"""Knowledge distillation pieces: the teacher bank written by the teacher stage."""
