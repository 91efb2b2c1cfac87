"""Running learners: the stream runner, the learner registry, the segment benchmark and its
report, the reference curve, checkpoints and progress bars."""
