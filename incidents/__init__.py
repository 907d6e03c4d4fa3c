"""Incidents: the monitor's detection of the six incident classes against the thresholds file, the incidents it
opens, updates and resolves, and their reports (README, *Operations*)."""
