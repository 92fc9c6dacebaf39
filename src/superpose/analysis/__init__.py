"""Model-independent analyses of base, expert and superposed models: statistics and plots on plain arrays."""
