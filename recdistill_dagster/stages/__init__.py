"""The work of each partition, one module a stage, without Dagster or MLflow.

Every stage function takes one `StageContext` (configuration, a storage protocol, the data source,
the run's identity, progress) plus the partition (and the student), reads its inputs from the store,
calls the pure model code in `models/`, writes its outputs atomically and returns a typed result the
asset turns into metadata.

    context     StageContext, RunIdentity
    chain       the self-dependent checkpoint chains, provenance, the usable-snapshot rule
    samples     the day's sample streams (evaluation log, teacher's, each student's)
    teacher     teacher training with recorded logits, the health verdict, fault drills
    dataset     a student's joined dataset (left join with the teacher's logits) and its manifest
    student     a student's distilled or baseline checkpoint
    evaluation  a student's transferability report (progressive validation)
"""
