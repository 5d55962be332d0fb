# Analysis: scores with explanations, PCA -> UMAP, neighbours, validation


rule score_galaxies:
    input:
        cubes="results/cubes.h5",
        model="results/models/{model}/model.keras",
        split="results/models/{model}/split.csv",
        history="results/models/{model}/history.csv",
        divergence="results/models/{model}/divergence.csv",
        agn=get_agn_catalog,
        truth=DATA["truth"] or [],
    output:
        scores=report(
            "results/{model}/scores.csv",
            caption="../report/scores.rst",
            category="Anomaly scores",
            labels={"model": "{model}", "table": "scores"},
        ),
        latents="results/{model}/latents.h5",
        reconstructions="results/{model}/reconstructions.h5",
        diagnostics="results/{model}/diagnostics.json",
        stats="results/{model}/raw_stats.npz",
    log:
        "logs/score_galaxies/{model}.log",
    benchmark:
        "results/benchmarks/score_galaxies/{model}.tsv"
    retries: 2  # transient on a cluster (preemption, a node's memory)
    conda:
        ML_ENV
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        model=config["model"],
        batch_size=config["score"]["batch_size"],
        top_k=config["score"]["top_k"],
        default=config["score"]["default"],
        seed=config["train"]["seed"],
        extra=config["neighbors"]["plateifus"],
        links=config["figures"]["links"],
        backend=config["keras_backend"],
        bitwise=config["bitwise_reproducible"],
    script:
        "../../scripts/score_galaxies.py"


rule embed_latents:
    input:
        latents="results/{model}/latents.h5",
    output:
        embedding="results/{model}/embedding.csv",
        variance="results/{model}/pca_variance.csv",
    log:
        "logs/embed_latents/{model}.log",
    benchmark:
        "results/benchmarks/embed_latents/{model}.tsv"
    retries: 2  # transient on a cluster (preemption, a node's memory)
    conda:
        "../../envs/ml.yaml"
    # seeded UMAP is single-threaded (umap-learn's rule); unseeded it uses 8
    threads: 1 if config["embed"]["seed"] is not None else 8
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        embed=config["embed"],
    script:
        "../../scripts/embed_latents.py"


rule find_neighbors:
    input:
        embedding="results/{model}/embedding.csv",
        scores="results/{model}/scores.csv",
    output:
        neighbors=report(
            "results/{model}/neighbors.csv",
            caption="../report/neighbors.rst",
            category="Neighbours",
            labels={"model": "{model}", "table": "nearest neighbours"},
        ),
    log:
        "logs/find_neighbors/{model}.log",
    benchmark:
        "results/benchmarks/find_neighbors/{model}.tsv"
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        neighbors=config["neighbors"],
    script:
        "../../scripts/find_neighbors.py"


rule validate_scores:
    input:
        scores="results/{model}/scores.csv",
        truth=DATA["truth"] or [],
    output:
        metrics="results/{model}/validation.json",
        figure=report(
            "results/figures/{model}/validation.png",
            caption="../report/validation.rst",
            category="Validation",
            labels={"model": "{model}", "figure": "validation"},
        ),
        figure_pdf="results/figures/{model}/validation.pdf",
    log:
        "logs/validate_scores/{model}.log",
    benchmark:
        "results/benchmarks/validate_scores/{model}.tsv"
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../../scripts/validate_scores.py"
