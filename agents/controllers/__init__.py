"""Hand-designed and baseline agents per environment family, behind one base (:mod:`.base`)."""
