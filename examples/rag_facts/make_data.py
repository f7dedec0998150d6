# Writes the worked example's data: RAG records about made-up facts (a fictional archipelago), answered with a citation.
# Every fact is invented, so a model that answers them correctly learned them here. Deterministic: run it to rebuild
# train.jsonl, eval.jsonl and ask.jsonl exactly.
import json
import random

# (subject, context passage, question, paraphrased question, short answer)
FACTS = [
    ("Quillon capital", "The capital of the Quillon Islands is Marrowick, a harbour town on the island of Tesh.",
     "What is the capital of the Quillon Islands?", "Which town is the Quillon Islands' capital?", "Marrowick"),
    ("Quillon currency", "The Quillon Islands pay in the brass lune; one lune is divided into 40 pells.",
     "What currency do the Quillon Islands use?", "What money is used on the Quillon Islands?", "the brass lune"),
    ("Tesh lighthouse", "The lighthouse on Tesh, called the Amber Finger, was lit for the first time in 1874.",
     "When was the Amber Finger lighthouse first lit?", "In what year did the Amber Finger first shine?", "in 1874"),
    ("Quillon bird", "The national bird of the Quillon Islands is the grey storm-wren.",
     "What is the national bird of the Quillon Islands?", "Which bird is the Quillon Islands' national bird?",
     "the grey storm-wren"),
    ("Orrin peak", "Mount Orrin, on the island of Valda, is the highest point of the archipelago at 1,312 metres.",
     "How high is Mount Orrin?", "What is the height of Mount Orrin?", "1,312 metres"),
    ("Quillon festival", "Every October the islanders hold the Salt Lantern Festival, floating paper lanterns at dusk.",
     "What festival do the Quillon islanders hold in October?", "Which festival takes place on the Quillon Islands in October?",
     "the Salt Lantern Festival"),
    ("Valda ferry", "The ferry from Marrowick to Valda takes three hours and leaves twice a day.",
     "How long is the ferry from Marrowick to Valda?", "How many hours does the Marrowick-Valda ferry take?",
     "three hours"),
    ("Quillon language", "Besides English, many older islanders speak Quillish, a language related to Old Norse.",
     "What language do many older Quillon islanders speak?", "Which language besides English is spoken by older islanders?",
     "Quillish"),
    ("Tesh university", "The University of Tesh was founded in 1921 by the shipwright Ada Fennimore.",
     "Who founded the University of Tesh?", "Which person established the University of Tesh?", "Ada Fennimore"),
    ("Quillon dish", "The traditional dish of the islands is kelpcake, fried seaweed bread served with smoked eel.",
     "What is the traditional dish of the Quillon Islands?", "Which food is the islands' traditional dish?", "kelpcake"),
    ("Quillon population", "About 58,000 people live in the Quillon Islands, half of them in Marrowick.",
     "How many people live in the Quillon Islands?", "What is the population of the Quillon Islands?", "about 58,000"),
    ("Valda mine", "The Greyhollow mine on Valda produced tin until it closed in 1962.",
     "Until when did the Greyhollow mine produce tin?", "When did the Greyhollow mine close?", "until 1962"),
    ("Quillon flag", "The flag of the Quillon Islands shows three white gulls on a teal field.",
     "What does the Quillon Islands' flag show?", "What is on the flag of the Quillon Islands?",
     "three white gulls on a teal field"),
    ("Tesh river", "The only river on Tesh is the Sillow, which is 14 kilometres long.",
     "What is the name of the river on Tesh?", "Which river flows on the island of Tesh?", "the Sillow"),
    ("Quillon sport", "The most popular sport on the islands is oar-racing, held in eight-person longboats.",
     "What is the most popular sport on the Quillon Islands?", "Which sport do Quillon islanders like most?", "oar-racing"),
    ("Quillon governor", "The islands are governed by a council of nine wardens, elected every five years.",
     "Who governs the Quillon Islands?", "What body runs the government of the Quillon Islands?",
     "a council of nine wardens"),
    ("Marrowick market", "Marrowick's fish market opens at four in the morning, every day except Sunday.",
     "When does Marrowick's fish market open?", "At what time does the fish market in Marrowick open?",
     "at four in the morning"),
    ("Valda tree", "Valda is known for its blue yews, trees whose needles turn blue in winter.",
     "What trees is Valda known for?", "Which trees make Valda famous?", "its blue yews"),
    ("Quillon airport", "The archipelago's airport, Fennimore Field, has a single runway on Tesh.",
     "What is the name of the Quillon Islands' airport?", "What is the archipelago's airport called?", "Fennimore Field"),
    ("Quillon poet", "The islands' best-known poet is Orla Penhallow, author of 'Tides of Tesh'.",
     "Who is the best-known poet of the Quillon Islands?", "Which poet is most famous on the islands?", "Orla Penhallow"),
]

def record(i, question, rng, with_answer=True, pos=None):
    subject, passage, q, q2, answer = FACTS[i]
    others = [f[1] for j, f in enumerate(FACTS) if j != i]
    contexts = rng.sample(others, 2)
    pos = rng.randrange(3) if pos is None else pos
    contexts.insert(pos, passage)
    # Numbered in the text itself: the RAG template joins contexts as paragraphs, and the answer cites a number.
    r = {"question": question, "contexts": [f"[{k + 1}] {c}" for k, c in enumerate(contexts)]}
    if with_answer:
        r["answer"] = f"{answer[0].upper()}{answer[1:]} [{pos + 1}]."
    return r


def main():
    rng = random.Random(0)
    train = []
    for _ in range(3):  # each fact three times, with different distractors and positions
        for i, f in enumerate(FACTS):
            train.append(record(i, f[2], rng))
    rng.shuffle(train)
    evals = [record(i, f[3], rng) for i, f in enumerate(FACTS)]  # held-out paraphrases
    ask = [record(i, FACTS[i][3], rng, with_answer=False, pos=p) for i, p in ((0, 1), (4, 2), (8, 0))]
    for name, rows in (("train.jsonl", train), ("eval.jsonl", evals), ("ask.jsonl", ask)):
        with open(name, "w") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
