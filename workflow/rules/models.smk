# Models: train a ConvLSTM2D AE and VAE on results/cubes.h5


rule train_model:
    input:
        cubes="results/cubes.h5",
    output:
        # write-protected once trained (hours of GPU time on the survey): a rerun
        # that would replace it stops with "Write-protected output files" until
        # you delete it yourself (rm -f results/models/<model>/model.keras)
        model=protected("results/models/{model}/model.keras"),
        history=report(
            "results/models/{model}/history.csv",
            caption="../report/history.rst",
            category="Training",
            labels={"model": "{model}", "table": "loss per epoch"},
        ),
        loss_png=report(
            "results/models/{model}/loss.png",
            caption="../report/loss.rst",
            category="Training",
            labels={"model": "{model}", "figure": "loss curve"},
        ),
        split="results/models/{model}/split.csv",
        divergence="results/models/{model}/divergence.csv",
        card=report(
            "results/models/{model}/model_card.json",
            caption="../report/model_card.rst",
            category="Training",
            labels={"model": "{model}", "table": "model card"},
        ),
    log:
        "logs/train_model/{model}.log",
    benchmark:
        "results/benchmarks/train_model/{model}.tsv"
    retries: 2  # transient on a cluster (preemption, a node's memory); resumes from its last epoch
    conda:
        ML_ENV
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=720,
    params:
        model=config["model"],
        train=config["train"],
        backend=config["keras_backend"],
        bitwise=config["bitwise_reproducible"],
    script:
        "../../scripts/train_model.py"
