"""The pure core: domain types, scope rules, the planner, settle and the renderer. No I/O, no clock, no azure."""
