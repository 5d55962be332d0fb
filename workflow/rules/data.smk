# Data layer: (synthetic survey) -> sample selection -> per-plate extraction -> cubes.h5


if SIMULATE:

    rule simulate_survey:
        output:
            drpall=DRPALL,
            agn=f"{REDUX}/agn.csv",
            truth=f"{REDUX}/truth.csv",
        log:
            "logs/simulate_survey.log",
        benchmark:
            "results/benchmarks/simulate_survey.tsv"
        conda:
            "../../envs/data.yaml"
        threads: 2
        resources:
            mem_mb=4000,
            runtime=60,
        params:
            drpver=DRPVER,
            n_galaxies=config["simulate"]["n_galaxies"],
            seed=config["simulate"]["seed"],
            anomaly_fraction=config["simulate"]["anomaly_fraction"],
            compresslevel=config["simulate"]["compresslevel"],
            dr17_effects=config["simulate"]["dr17_effects"],
        script:
            "../../scripts/simulate_survey.py"


checkpoint select_sample:
    input:
        drpall=DRPALL,
    output:
        sample="results/sample.csv",
        rejects="results/sample.rejects.csv",
        dropped="results/sample.dropped.csv",
    log:
        "logs/select_sample.log",
    benchmark:
        "results/benchmarks/select_sample.tsv"
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        redux_dir=get_redux_dir,
        drpver=DRPVER,
        plateifus=config["sample"]["plateifus"],
        max_galaxies=config["sample"]["max_galaxies"],
        require_files=not DOWNLOAD,
    script:
        "../../scripts/select_sample.py"


rule extract_plate:
    input:
        cubes=get_plate_cubes,
        lines=DATA["lines"],
    output:
        h5="results/extract/{plate}.h5",
        rejects="results/extract/{plate}.rejects.csv",
    log:
        "logs/extract_plate/{plate}.log",
    benchmark:
        "results/benchmarks/extract_plate/{plate}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        galaxies=get_plate_galaxies,
        drpver=DRPVER,
        window_bins=config["extract"]["window_bins"],
        crop=config["extract"]["crop"],
        max_reject_fraction=1.0,  # a plate job keeps every good cube; assemble_cubes applies the survey's threshold
        galactic_extinction=config["extract"]["galactic_extinction"],
        extinction_rv=config["extract"]["extinction_rv"],
        verify_full_file=config["extract"]["verify_full_file"],
        compression="lzf",  # intermediate, read once by assemble_cubes
    script:
        "../../scripts/extract_plate.py"


rule assemble_cubes:
    input:
        plates=get_plate_files,
        plate_rejects=get_plate_rejects,
        sample_rejects="results/sample.rejects.csv",
    output:
        cubes="results/cubes.h5",
        rejects="results/rejects.csv",
    log:
        "logs/assemble_cubes.log",
    benchmark:
        "results/benchmarks/assemble_cubes.tsv"
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        drpver=DRPVER,
        compression=config["extract"]["hdf5_compression"],
        max_reject_fraction=config["extract"]["max_reject_fraction"],
        config={k: config[k] for k in ("data", "sample", "extract")},
    script:
        "../../scripts/assemble_cubes.py"


if DOWNLOAD:

    # runs on the submitting node: cluster compute nodes are often offline;
    # concurrency is bounded by the profiles' `resources: downloads=N`
    localrules:
        download_cube,

    rule download_cube:
        output:
            CUBE_PATTERN,
        log:
            "logs/download_cube/{plate}-{ifudsgn}.log",
        benchmark:
            "results/benchmarks/download_cube/{plate}-{ifudsgn}.tsv"
        conda:
            "../../envs/data.yaml"
        resources:
            downloads=1,
            mem_mb=500,
            runtime=60,
        params:
            base_url=config["download"]["base_url"],
            drpver=DRPVER,
            retries=config["download"]["retries"],
            backoff_s=config["download"]["backoff_s"],
            timeout_s=config["download"]["timeout_s"],
        script:
            "../../scripts/download_cube.py"
