"""The transferability report: one list of models, a typed report, its estimates, plots and pages.

    models       the models a report compares (key, label, colour): defined once, read everywhere
    schema       the typed report of one student and day (day scope and cumulated scope)
    estimate     AUCs, gains and η with intervals; cumulated from stored per-day replicates
    calibration  fixed-bin calibration statistics that add up over days
    plots        PNG plots over days
    site         the HTML pages: one per student, and the index comparing the students
    text         markdown and terminal tables
"""
