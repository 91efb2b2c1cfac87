"""Looking inside: the stream explorer widget, dreams, hierarchy views, figures and notebooks."""
