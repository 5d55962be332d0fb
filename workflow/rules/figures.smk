# Figures, the explorer page and the report


rule plot_umap:
    input:
        embeddings=expand("results/{model}/embedding.csv", model=MODELS),
        scores=expand("results/{model}/scores.csv", model=MODELS),
    output:
        scores=report(
            "results/figures/umap_scores.png",
            caption="../report/umap_scores.rst",
            category="Figures",
            labels={"figure": "UMAP by score (Fig. 2)"},
        ),
        scores_pdf="results/figures/umap_scores.pdf",
        agn=report(
            "results/figures/umap_agn.png",
            caption="../report/umap_agn.rst",
            category="Figures",
            labels={"figure": "UMAP with AGN (Fig. 2)"},
        ),
        agn_pdf="results/figures/umap_agn.pdf",
    log:
        "logs/plot_umap.log",
    benchmark:
        "results/benchmarks/plot_umap.tsv"
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        models=MODELS,
    script:
        "../../scripts/plot_umap.py"


rule plot_score_distributions:
    input:
        scores=expand("results/{model}/scores.csv", model=MODELS),
    output:
        distributions=report(
            "results/figures/score_distributions.png",
            caption="../report/score_distributions.rst",
            category="Figures",
            labels={"figure": "score distributions"},
        ),
        distributions_pdf="results/figures/score_distributions.pdf",
    log:
        "logs/plot_score_distributions.log",
    benchmark:
        "results/benchmarks/plot_score_distributions.tsv"
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        models=MODELS,
    script:
        "../../scripts/plot_score_distributions.py"


rule plot_pca_variance:
    input:
        variance=expand("results/{model}/pca_variance.csv", model=MODELS),
    output:
        variance=report(
            "results/figures/pca_variance.png",
            caption="../report/pca_variance.rst",
            category="Figures",
            labels={"figure": "PCA explained variance"},
        ),
        variance_pdf="results/figures/pca_variance.pdf",
    log:
        "logs/plot_pca_variance.log",
    benchmark:
        "results/benchmarks/plot_pca_variance.tsv"
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        models=MODELS,
    script:
        "../../scripts/plot_pca_variance.py"


rule plot_gallery:
    input:
        reconstructions="results/{model}/reconstructions.h5",
        scores="results/{model}/scores.csv",
    output:
        gallery=report(
            "results/figures/{model}/gallery.png",
            caption="../report/gallery.rst",
            category="Figures",
            labels={"model": "{model}", "figure": "anomalous AGN gallery (Fig. 3)"},
        ),
        gallery_pdf="results/figures/{model}/gallery.pdf",
    log:
        "logs/plot_gallery/{model}.log",
    benchmark:
        "results/benchmarks/plot_gallery/{model}.tsv"
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        n=config["figures"]["gallery_n"],
    script:
        "../../scripts/plot_gallery.py"


rule plot_bpt:
    input:
        reconstructions="results/{model}/reconstructions.h5",
        scores="results/{model}/scores.csv",
    output:
        bpt=report(
            "results/figures/{model}/bpt.png",
            caption="../report/bpt.rst",
            category="Figures",
            labels={"model": "{model}", "figure": "BPT of the gallery"},
        ),
        bpt_pdf="results/figures/{model}/bpt.pdf",
    log:
        "logs/plot_bpt/{model}.log",
    benchmark:
        "results/benchmarks/plot_bpt/{model}.tsv"
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        n=config["figures"]["gallery_n"],
    script:
        "../../scripts/plot_bpt.py"


rule plot_neighbors:
    input:
        cubes="results/cubes.h5",
        scores="results/{model}/scores.csv",
        neighbors="results/{model}/neighbors.csv",
    output:
        neighbors=report(
            "results/figures/{model}/neighbors.png",
            caption="../report/neighbors_fig.rst",
            category="Figures",
            labels={"model": "{model}", "figure": "nearest neighbours (Fig. 3)"},
        ),
        neighbors_pdf="results/figures/{model}/neighbors.pdf",
    log:
        "logs/plot_neighbors/{model}.log",
    benchmark:
        "results/benchmarks/plot_neighbors/{model}.tsv"
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../../scripts/plot_neighbors.py"


rule plot_line_heatmap:
    input:
        scores="results/{model}/scores.csv",
    output:
        heatmap=report(
            "results/figures/{model}/line_heatmap.png",
            caption="../report/line_heatmap.rst",
            category="Figures",
            labels={"model": "{model}", "figure": "per-line contributions"},
        ),
        heatmap_pdf="results/figures/{model}/line_heatmap.pdf",
    log:
        "logs/plot_line_heatmap/{model}.log",
    benchmark:
        "results/benchmarks/plot_line_heatmap/{model}.tsv"
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../../scripts/plot_line_heatmap.py"


rule build_explorer:
    input:
        cubes="results/cubes.h5",
        embeddings=expand("results/{model}/embedding.csv", model=MODELS),
        scores=expand("results/{model}/scores.csv", model=MODELS),
        neighbors=expand("results/{model}/neighbors.csv", model=MODELS),
        reconstructions=expand("results/{model}/reconstructions.h5", model=MODELS),
        truth=DATA["truth"] or [],
    output:
        html=report(
            "results/explorer.html",
            caption="../report/explorer.rst",
            category="Explorer",
            labels={"page": "3-D UMAP explorer"},
        ),
    log:
        "logs/build_explorer.log",
    benchmark:
        "results/benchmarks/build_explorer.tsv"
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        models=MODELS,
        k=config["neighbors"]["k"],
        links=config["figures"]["links"],
    script:
        "../../scripts/build_explorer.py"
