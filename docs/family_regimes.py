"""Print the README's table of model families x regimes: a pair is "yes" when ``validate``
accepts an Experiment of the family (its registry example sizes, default source) under the regime.

Run: ``python docs/family_regimes.py``.
"""

import collapse_jax as cj

regimes = sorted(cj.REGIMES)
print("| family | " + " | ".join(f"`{r}`" for r in regimes) + " |")
print("|---" * (len(regimes) + 1) + "|")
for model in sorted(cj.MODELS):
    cells = []
    for regime in regimes:
        try:
            cj.validate(cj.Experiment(name="t", model=model, regimes=(regime,),
                                      **cj.MODELS[model].example))
            cells.append("yes")
        except cj.ConfigError:
            cells.append("no")
    print(f"| `{model}` | " + " | ".join(cells) + " |")
