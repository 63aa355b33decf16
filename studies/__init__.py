"""Studies run from a checkout: experiments, results tables and capacity checks that
compare training settings. Not part of the installed package."""
