"""Where records come from: data files and hub datasets read in any supported format into canonical records,
named datasets from a registry, several datasets mixed, and every bad record reported or kept as a reject."""
