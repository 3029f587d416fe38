"""Pre-labelling: a trained detector draws boxes on new images, which are written as an
annotation set that people correct in their labelling tool (Pascal VOC, COCO, YOLO,
Label Studio or CVAT) and that training reads back as it is; the images a person
should review first are ranked by how doubtful their boxes are (scores near the
threshold, disagreement with the mirrored image, classes the model confuses).
"""
