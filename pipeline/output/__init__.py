"""What a run shows and leaves: the terminal view, the plan table, the JSON report, and the
CI-native formats (JUnit, step summary, dotenv, Mermaid). Serialisers, no decisions."""
