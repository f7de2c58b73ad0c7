"""Evaluation: the world judge and its benchmark on Kinema World.

    from kinema.eval import judge, suite
    scores = judge.judge(frames, fps, spec)                   # {metric: Score(value, reason)}
    results = suite.run(suite.source("real"), suite.suite("quick"))
    print(suite.calibration_table(suite.calibrate("quick")))

judge.py reads clips (segmentation, tracking, background, camera) and scores them; suite.py
holds the prompt suites, the clip sources (renders, baselines, the door for trained models),
the runner and the calibration; report.py writes scores.json, report.md and the pictures;
words.py probes which caption words a model reads, from its predictions on noisy real clips.
"""
