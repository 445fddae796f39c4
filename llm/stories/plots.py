"""The plots of the built-in stories: a template for each, and the function that prepares it.

Every story is the opening paragraph (`llm.stories.engine`) followed by one plot: a problem and an
ending that follows from it, with a lesson. A plot function gets the `Writer` after the scene is
set (hero, friend, parent, loved thing, place), adds the values its template needs (a helper, a
food, what made the noise...) and returns the template. `PLOTS` lists them with what each needs of
the scene. The template format is described in `llm.stories.writer`.
"""

from collections.abc import Callable

from llm.stories.words import PET_NAMES
from llm.stories.writer import Character, Writer, with_article

LOST_THING = """
One {weather} {time}, {name} took {his} {obj} to {place}.
| One day, {name} {move} to {place} with {his} {dobj}.
| On a {weather} {time}, {name} went to play {at_place}.
{He} played with {his} {obj} for a long time.
| {He} saw {sight} {at_place}, and {he} was very {good}.
Then {he} saw {distraction} and {move} after it.
| Soon {he} saw {distraction}, so {he} put {his} {obj} down to look.
When {he} came back, {his} {obj} was gone!
| When {he} turned around, {his} {obj} was not there anymore!

{Name} looked {spot1}, but it was not there.
| {Name} looked everywhere, but {he} could not find it.
"Where is my {obj}?" {he} cried.
| "Oh no! I lost my {obj}!" {name} said.
{He} felt very {bad}.
| A big tear rolled down {his} face.

Just then, {his} friend {fwho} came by.
| Soon, {his} friend {fwho} came by.
"Why are you sad, {name}?" {fhe} asked.
| "What is wrong, {name}?" asked {fname}.
"I lost my {dobj}," said {name}.
| "I cannot find my {obj}," {name} said.
"Don't worry. I will help you look," said {fname}.
| "Let's look for it together," {fname} said with a smile.

They looked {spot2}, but it was not there either.
| First they looked {spot2}. Nothing was there.
Then {fname} looked {spot3}.
| At last, they looked {spot3}.
"Look! Here it is!" {fhe} shouted.
| "I found it!" {fname} called.

{Name} was so {good}. {He} hugged {fname} and said, "Thank you!"
| {Name} held {his} {obj} tight. "Thank you for helping me, {fname}!" {he} said.
From that day on, {name} always kept {his} {obj} close.
| {Name} learned to keep {his} things safe.
| {Name} learned that a good friend is always ready to help.
? They played with the {obj} together until it was time to go home.
| And they lived happily ever after.
"""


def _lost_thing(w: Writer) -> str:
    return LOST_THING


STUCK_UP_HIGH = """
One {weather} day, {name} went {at_place} with {his} {dobj}.
| {Name} took {his} {dobj} to {place} to play.
{He} loved to {use}.
| {He} was very {good} to play.
{Cause}

{Name} jumped as high as {he} could, but {he} could not reach it.
| {Name} tried to climb up, but it was too high.
"Come down, {obj}!" {he} called. But the {obj} did not move.
| "How will I get it back?" {name} asked {himself}.
{He} felt {bad}.
| {He} sat down and felt very {bad}.
"""
STUCK_HELPERS = (
    """
Then {pname} came outside.
| Just then, {his} {pkind} walked by.
"What is wrong?" {phe} asked. {Name} pointed up at the {obj}.
{Pname} was tall. {Phe} reached up and got the {obj} down.
| {Pname} got a ladder, climbed up and brought the {obj} down.
""",
    """
Then {his} friend {fwho} came by and saw the {obj}.
"I have an idea!" said {fname}. "We can use a long stick."
{Fname} found a long stick. Together they pushed the {obj}, and it fell down.
| {Fname} found a long stick and gave it to {name}. {Name} pushed the {obj}, and down it came.
""",
    """
A little bird saw {name} and flew down.
| A kind bird was sitting on a branch nearby.
"I can help you," said the bird. "I can fly up high."
The bird flew up and pushed the {obj} with its beak. Down it came!
""",
)
STUCK_END = """
"Thank you so much!" said {name}.
| {Name} said, "Thank you for your help!"
{Name} learned that it is good to ask for help.
| After that, {name} played {at_place} more carefully.
| {He} played with the {obj} all day and held it tight.
? {Name} smiled all the way home.
"""


def _stuck_up_high(w: Writer) -> str:
    w.ctx["perch"] = w.pick(
        ("in a tall tree", "on the roof of the shed", "on a high branch", "on top of a tall fence")
    )
    tags = w.ctx["obj_tags"]
    windy = "wind" in tags and ("throw" not in tags or w.rng.random() < 0.5)
    w.ctx["cause"] = w.fill(
        "Then a strong wind blew, and it carried the {obj} away. It landed {perch}."
        if windy
        else "{He} threw it too high, and it got stuck {perch}."
    )
    return STUCK_UP_HIGH + w.pick(STUCK_HELPERS) + STUCK_END


SHARING = """
One day, {name} brought {his} {dobj} to {place}.
| One {weather} {time}, {name} was playing with {his} {dobj} {at_place}.
{His} friend {fwho} came over and saw it.
| {His} friend {fwho} came to play.
"Can I play with your {obj} too?" asked {fname}.
| "Wow! Can I have a turn?" {fname} asked.

"No! It is mine!" said {name}.
| "No, you can't. It is my {obj}!" {name} said.
{Fname} was sad. {Fhe} walked away and sat down alone.
| {Fname} looked down at the ground. {Fhe} went home feeling {bad}.

{Name} played alone for a while.
| {Name} played with the {obj} by {himself}.
But it was not fun to play alone.
| But soon {he} did not feel happy.
{He} thought about {fname} and how sad {fhe} looked.
| {He} missed {his} friend.

{Name} went to {fname} and said, "I am sorry. Let's play with my {obj} together."
| {Name} ran to find {fname}. "Here, you can have a turn," {he} said.
{Fname} smiled a big smile.
| {Fname} was so {good}.
They took turns and had lots of fun.
| They played together all afternoon and laughed a lot.
{Name} learned that sharing makes everyone happy.
| {Name} learned that toys are more fun when you share them.
"""


def _sharing(w: Writer) -> str:
    return SHARING


NEW_FRIEND = """
One {weather} {time}, {name} went to {place}.
| One day, {name} {move} to {place} to play.
{He} saw {sight} {at_place}.
| {He} liked {place} very much.
{Name} saw {a_friend} sitting all alone.
| Near {sight}, {he} saw {a_friend} who looked very {bad}.

"Hello! Why are you alone?" asked {name}.
| "Hi! Are you okay?" {name} asked.
"I am new here," said the {fkind}. "My name is {fname}, and I have no friends."
| The {fkind} said, "My name is {fname}. I just moved here, and I feel lonely."
"I will be your friend!" said {name}. "Do you want to play {game}?"
| "You can play with me," {name} said. "Let's play {game}!"

{Fname} smiled and jumped up.
| The {fkind} smiled for the first time that day.
They played {game} all afternoon.
| They played {game} and laughed a lot.
? Then they shared some {snack} under a tree.
| Later, {name} showed {fname} {his} {dobj}.

When it was time to go home, {fname} said, "Thank you for being my friend."
| "Can we play again tomorrow?" asked {fname}. "Yes!" said {name}.
From that day on, {name} and {fname} were best friends.
| {Name} learned that a kind word can make a new friend.
| And every day after that, they met {at_place} to play.
"""


def _new_friend(w: Writer) -> str:
    return NEW_FRIEND


STORM = """
One night, a big storm came.
| One night, dark clouds filled the sky.
The wind blew hard, and the rain hit the window.
| Rain fell, and the trees shook in the wind.
Then there was a loud BOOM of thunder!
| Suddenly, thunder went BOOM!

{Name} was very scared.
| {Name} shook with fear.
{He} hid under {his} blanket.
| {He} pulled the blanket over {his} head.
"{Pname}!" {he} called. "I am scared!"
| "{Pname}, help!" cried {name}.

{Pname} came in and sat on the bed.
| {Pname} came in and gave {name} a hug.
"Thunder is just a loud noise from the clouds," {phe} said. "It cannot hurt you."
| "The storm is outside, and we are safe inside," said {pname}.
"Let's count after each flash of light," {phe} said. \
"The bigger the number, the farther away the storm is."
| {Pname} sat with {name} and sang a soft song.

Soon the thunder was quiet, and the storm went away.
| After a while, the rain got soft and the storm moved away.
{Name} closed {his} eyes and fell asleep.
| {Name} yawned and fell asleep.
In the morning, the sun was shining. {Name} was not scared of storms anymore.
| The next day, {name} told {his} friend {fname}, "I was brave in the storm!"
"""


def _storm(w: Writer) -> str:
    return STORM


HURT_BIRD = """
One {weather} {time}, {name} was playing {at_place}.
| One day, {name} {move} to {place} to look at {sight}.
{He} heard a small sound {spot1}.
| Then {he} saw something move {spot1}.
It was a little bird with a hurt wing.
| It was a baby bird, and it could not fly.

"Poor little bird," said {name}. "I will help you."
| "Don't be scared," {name} said softly. "I will take care of you."
{He} picked it up very gently and took it home.
| {He} carried it home very carefully.
{Pname} helped {him} make a soft bed in a box.
| {Pname} found a small box, and they put the bird in it.

Every day, {name} gave the bird water and seeds.
| {Name} fed the bird and sang to it every day.
Because {name} took such good care of it, the wing got better.
| Day by day, the bird got stronger.
One morning, the bird flapped its wings and flew around the room!

{Name} took the bird outside. "Goodbye, little bird!" {he} said.
| It was time to let the bird go. {Name} opened the box.
The bird flew up into the sky.
| The bird flew to a tall tree and sang.
Every morning after that, the bird came back to sing at {name}'s window.
| {Name} felt {good}, because {he} had helped a friend.
"""


def _hurt_bird(w: Writer) -> str:
    return HURT_BIRD


BUILD = """
One day, {name} and {his} friend {fname} wanted to build {project} {where}.
| {Name} and {his} friend {fwho} had a big plan. They wanted to build {project}.
They worked very hard.
| They worked together all morning.
When it was done, it was the best one they had ever made.
| At last it was finished. "It is perfect!" said {fname}.

But then {ruin}.
| Just then, {ruin}.
{Name} was so {bad} that {he} wanted to cry.
| {Name} and {fname} felt {bad}.
"All our work is gone," said {name}.
| "Now we have nothing," {name} said.

{Fname} thought for a moment.
| Then {fname} had an idea.
"Let's try again," {fhe} said. "We know how to make it even better."
| "We can build a new one," said {fname}. "And we can make it stronger."
{Better}.
| {Better}, and {name} helped carry everything.

The new one was even better than the first.
| This time, it did not fall.
{Name} and {fname} were very proud.
| They clapped and cheered.
They learned that when something goes wrong, you can always try again.
| {Name} learned not to give up when things go wrong.
"""
# project, where, what ruins it, how it goes better the second time
PROJECTS = (
    ("a big sandcastle", "at the beach", "a big wave came and washed it away",
     "This time they built it far from the water"),
    ("a tall tower of blocks", "in the living room", "the cat jumped on it and knocked it down",
     "This time they built it on the table, where the cat could not reach"),
    ("a snowman", "in the yard", "the warm sun came out and the snowman began to melt",
     "This time they built it in the shade of a big tree"),
    ("a fort out of sticks", "in the woods", "a strong wind blew and the sticks fell down",
     "This time they tied the sticks together with string"),
    ("a little house for the birds", "in the garden", "it fell off the branch and broke",
     "This time they used more nails and put it on a strong branch"),
)  # fmt: skip


def _build(w: Writer) -> str:
    w.ctx.update(zip(("project", "where", "ruin", "better"), w.pick(PROJECTS), strict=True))
    return BUILD


RACE = """
One {weather} {time}, {name} and {his} friend {fwho} were playing {at_place}.
| {Name} and {his} friend {fname} went to {place} to play.
"Let's have a race to {goal}!" said {fname}.
| "I bet I can run faster than you," {name} said. "Let's race to {goal}!"
"Ready, set, go!" they shouted.
| They counted to three and started to run.

{Name} was fast, and soon {he} was far ahead.
| {Name} ran as fast as {he} could.
Then {he} heard a cry behind {him}.
| Suddenly, {he} heard {fname} shout.
{Fname} had tripped over a rock and hurt {fhis} knee.
| {Fname} had fallen down, and {fhis} leg hurt.

{Name} could see {goal}. {He} wanted to win.
| {Name} stopped to think.
But {he} turned around and ran back to {fname}.
| But {his} friend was more important than the race.
"Are you okay?" {he} asked, and helped {fname} stand up.
| "Lean on me," said {name}. "We can walk together."

They walked to {goal} side by side.
| Slowly, they got to {goal} together.
"Thank you," said {fname}. "You are a true friend."
| "You could have won," said {fname}. "Thank you for coming back."
{Name} learned that friends are more important than winning.
| Nobody won the race, but they both felt {good}.
"""


def _race(w: Writer) -> str:
    w.ctx["goal"] = w.pick(("the big tree", "the old fence", "the top of the hill", "the gate"))
    return RACE


LOST_WAY = """
One day, {name} was playing near {his} home.
| One {weather} {time}, {name} went out to play.
{He} saw {distraction} and followed it.
| {Distraction} went by, and {name} {move} after it.
{He} went farther and farther from home.
| {He} did not look where {he} was going.

Soon {name} stopped and looked around.
| When {he} stopped, everything looked new.
{He} did not know where {he} was.
| {He} could not see {his} home anymore.
"I am lost," {he} said, and began to cry.
| {Name} felt scared and alone.

Then {a_guide} came by.
| Just then, {he} heard a voice. It was {a_guide}.
"Why are you crying, little one?" asked {gname}.
| "What is the matter?" {gname} asked.
"I cannot find my way home," said {name}. "My home is {home}."
"I know that place," said {gname}. "Follow me."

{Gname} showed {name} the way.
| {Name} walked with {gname} until {he} saw home.
{Pname} was waiting and gave {name} a big hug.
| {Pname} ran out. "I was so worried!" {phe} said and hugged {name}.
"I am sorry," said {name}. "Next time, I will stay close to home."
| {Name} learned to always look where {he} was going.
? {Name} thanked {gname}, and they became good friends.
"""


def _lost_way(w: Writer) -> str:
    kind = w.pick(("owl", "deer", "turtle", "goose"))
    w.add_character("g", Character(f"the {kind}", kind, w.rng.random() < 0.5))
    w.ctx["a_guide"] = with_article(f"{w.pick(('wise old', 'kind', 'friendly'))} {kind}")
    return LOST_WAY


PICNIC = """
One {weather} day, {name} and {pname} went on a picnic {at_place}.
| {Pname} took {name} on a picnic {at_place}.
They brought a basket full of {snack}.
| They had {snack} and cold lemonade.
They sat on a big blanket and looked at {sight}.

Suddenly, a {thief} ran up and took some of the {snack}!
| {Name} looked away for a moment. When {he} looked back, a {thief} was eating the {snack}!
"Hey! Those are mine!" shouted {name}.
| "Stop! That is our food!" {name} cried.
{He} was very angry.
| {Name} stamped {his} feet.

"Look at the {thief}," said {pname}. "It is very thin. I think it is hungry."
| {Pname} said, "Maybe the {thief} has no food. We have more than we need."
{Name} looked at the {thief} again.
| {Name} thought about it.
It looked small and hungry.
| The {thief} looked back at {him} with big eyes.

{Name} put some {snack} on the grass. "Here, this is for you," {he} said.
| {Name} gave the {thief} some of {his} {snack}.
The {thief} ate it and looked very happy.
| The {thief} ate every bite.
{Name} felt warm inside.
| {Name} felt {good} and smiled.
{He} learned that sharing with someone in need is a kind thing to do.
| After that, {name} always brought some extra {snack} for the {thief}.
"""


def _picnic(w: Writer) -> str:
    w.ctx["thief"] = w.pick(("squirrel", "bird", "raccoon", "goat", "crow"))
    return PICNIC


RAINY_DAY = """
{Name} wanted to go to {place} with {his} friend {fname}.
| {Name} had a plan. {He} wanted to play {game} {at_place}.
But when {he} woke up, it was raining.
| But then dark clouds came, and it began to rain.
The rain fell and fell.
| It rained so hard that {he} could not go outside.

{Name} sat by the window and felt {bad}.
| {Name} looked out the window.
"Now the day is ruined," {he} said.
| "I can't go out. This is no fun," {he} said.

{Pname} sat down next to {him}.
| {Pname} heard {him} and came over.
"Rainy days can be fun too," said {pname}. "We can {idea}."
| "I have an idea," said {pname}. "Let's {idea}!"
{Fun}

Soon, the rain stopped, and a big rainbow came out.
| Later, the sun came out again.
{Name} put on {his} boots and jumped in the puddles.
| {Name} ran outside, and {his} friend {fwho} came to play.
{Name} learned that a rainy day can be a happy day too.
| It was a good day after all.
"""


def _rainy_day(w: Writer) -> str:
    idea, fun = w.pick((
        ("build a fort out of blankets and pillows", "They built a big fort and read books in it."),
        ("bake cookies", "They mixed the dough and baked the cookies. The house smelled sweet."),
        ("paint pictures", "They painted the sun, the trees and a big rainbow."),
        ("play hide and seek in the house",
         "{Name} hid behind the big chair, and {pname} looked everywhere."),
    ))  # fmt: skip
    w.ctx.update(idea=idea, fun=w.fill(fun))
    return RAINY_DAY


LEARN_SKILL = """
{Name} wanted to learn to {skill}.
| {Name} had a dream. {He} wanted to {skill}.
{His} friend {fname} could already {skill}, and {name} wanted to do it too.
| All the big kids could {skill}, and {name} wanted to be like them.

The first time {he} tried, {fail}.
| {He} tried, but {fail}.
{He} tried again, and again {fail}.
| It was very hard.
"I will never learn to {skill}!" {he} cried.
| "I can't do it," {name} said, and {he} wanted to give up.

{Cname} sat down next to {him}.
| {Cname} came over to help.
"Everyone falls at first," {che} said. "Try again, a little at a time."
| "Don't give up," said {cname}. "If you practice, you will get better."
So {name} practiced every day.
| {Name} wiped {his} eyes and tried again.
{Practice}.

One day, {he} did it! {Name} could {skill}!
| At last, {name} could {skill}!
"I did it!" {he} shouted. "I really did it!"
| {He} felt so {good}.
{Name} learned that practice makes things easier.
| {Name} learned to never give up.
"""
# skill, how it goes wrong at first, what practice looks like
SKILLS = (
    ("ride a bike", "{he} wobbled and fell over", "{He} rode a little farther every day"),
    ("swim", "{he} sank and got water in {his} nose", "{He} kicked {his} legs in the water"),
    ("climb the big tree", "{his} foot slipped and {he} fell on the soft grass",
     "{He} climbed one branch higher every day"),
    ("catch a ball", "the ball hit {his} nose", "{He} caught the ball a little more often"),
    ("whistle", "only air came out", "{He} tried and tried"),
    ("jump rope", "the rope caught {his} feet", "{He} jumped and jumped"),
)  # fmt: skip


def _learn_skill(w: Writer) -> str:
    skill, fail, practice = w.pick(SKILLS)
    w.ctx.update(skill=skill, fail=w.fill(fail), practice=w.fill(practice))
    w.add_character("c", w.cast[w.pick(("p", "f"))])  # the coach: the parent or the friend
    return LEARN_SKILL


GIFT = """
Tomorrow was {pname}'s birthday.
| It was almost {pname}'s birthday.
{Name} wanted to give {phim} a special gift.
| {Name} wanted to surprise {phim}.
{He} had no money, so {he} decided to make {gift}.
| {He} thought and thought, and then {he} decided to make {gift}.

{Name} worked very hard on {his} gift.
| {He} made {gift} all by {himself}.
But then {mishap}.
| But oh no! {Mishap}.
"Now I have nothing for {pname}," {he} said, and felt {bad}.
| {Name} was so {bad}.

{Name} did not give up.
| Then {name} had an idea.
{Fix}.

The next morning, {name} gave {pname} the gift.
| On {pname}'s birthday, {name} said, "Happy birthday! I made this for you."
{Pname} smiled a big smile and hugged {name}.
| {Pname} was so happy.
"This is the best gift I ever got," {phe} said.
| "Thank you! I love it, because you made it," said {pname}.
{Name} felt {good} all day.
| {Name} learned that gifts from the heart are the best.
"""
# gift, what goes wrong, how the hero fixes it
GIFTS = (
    ("a bunch of flowers", "{he} tripped, and the flowers fell in the mud",
     "{He} went back and picked new flowers, even prettier than before"),
    ("a picture", "{he} spilled water on it, and the colors ran",
     "{He} painted a new picture with bright colors"),
    ("a card", "the wind blew it away", "{He} made a new card and held it tight"),
    ("a necklace of shells", "the string broke, and the shells fell on the floor",
     "{His} friend {fname} helped {him} put the shells on a strong new string"),
)  # fmt: skip


def _gift(w: Writer) -> str:
    gift, mishap, fix = w.pick(GIFTS)
    w.ctx.update(gift=gift, mishap=w.fill(mishap), fix=w.fill(fix))
    return GIFT


BROKEN = """
One rainy day, {name} was playing with {his} {obj} in the house.
| {Name} was bored, so {he} played with {his} {dobj} inside.
{Pname} had said, "Please do not play with that in the house."
| {He} knew {he} should play with it outside.
But {he} did not listen.
| But {name} wanted to play anyway.

The {obj} hit {pname}'s {precious}.
| {His} {obj} flew across the room.
CRASH! The {precious} fell and broke into pieces.
| The {precious} fell on the floor and broke.
{Name} was scared.
| {Name} felt very {bad}.
{He} thought about hiding the pieces under the bed.
| {He} wanted to run away and hide.

But {he} knew that was wrong.
| But then {he} thought again.
{He} went to {pname} and said, "I am sorry. I broke your {precious}."
| "{Pname}," {he} said quietly, "I did something bad. I broke your {precious}."

{Pname} was sad about the {precious}, but {phe} hugged {name}.
| {Pname} looked at the pieces. Then {phe} looked at {name}.
"Thank you for telling me the truth," {phe} said. "I am proud of you."
| "Accidents happen," said {pname}. "I am glad you told me."
? Together, they glued the pieces back together.
{Name} learned that it is always best to tell the truth.
| From then on, {name} played with {his} {obj} outside.
"""


def _broken(w: Writer) -> str:
    w.ctx["precious"] = w.pick(("favorite vase", "big lamp", "blue cup", "old clock", "plate"))
    return BROKEN


STRANGE_SOUND = """
One {time}, {name} was playing {at_place}.
| One {weather} {time}, {name} {move} to {place}.
{He} heard a strange sound {spot1}. "Squeak, squeak!"
| Then {he} heard a funny noise {spot1}.
{Name} was a little scared.
| {Name} stopped and listened.

"What could it be?" {he} said to {himself}.
| "Who is there?" {he} called.
{Name} was scared, but {he} was curious too.
| {He} wanted to run away, but {he} wanted to know.
Slowly, {he} went closer and looked.
| {He} took a deep breath and peeked.

It was {source}!
| There, {spot1}, {he} found {source}!
{Reveal}.
| {Name} laughed. {Reveal}.
{Name} was not scared anymore.
| {Name} smiled. There was nothing to fear.
{He} ran home to tell {pname} all about it.
| {Name} learned that new things are not always scary.
"""
# what made the sound, and what the hero then understands
SOURCES = (
    ("three tiny kittens", "Their mother cat was close by"),
    ("a little lost puppy", "It had a tag with its name and home on it"),
    ("a baby bird that had fallen from its nest", "Its nest was on a low branch above"),
    ("{his} friend {fname}, hiding and giggling", "{Fname} had wanted to surprise {him}"),
    ("a hedgehog eating a worm", "It was just looking for its dinner"),
)  # fmt: skip


def _strange_sound(w: Writer) -> str:
    source, reveal = w.pick(SOURCES)
    w.ctx.update(source=w.fill(source), reveal=w.fill(reveal))
    return STRANGE_SOUND


PLANTING = """
One spring morning, {pname} gave {name} a little seed.
| One day, {name} found a small seed {at_place}.
"What will it grow into?" asked {name}.
| "Can I plant it?" {name} asked. "Yes," said {pname}. "Let's see what it grows into."
{Name} dug a hole in the garden and put the seed in it.
| {Name} planted the seed in a pot by the kitchen window.
{He} gave it some water and said, "Grow, little seed!"

The next morning, {name} ran to look at the seed, but nothing was there.
| The next day, {name} looked, but there was only dirt.
"Why is it not growing?" {he} asked.
| {Name} was {bad}. "My seed does not want to grow," {he} said.

"Seeds need time," said {pname}. "Give it water and sun, and wait."
| {Pname} smiled. "Be patient. A seed grows slowly, under the ground where we cannot see it."
So {name} waited. Every day, {he} gave the seed a little water.
| {Name} waited and waited, and {he} watered it every day.

One morning, {name} saw a tiny green sprout!
| After many days, a little green leaf came out of the dirt.
Day after day, it grew bigger.
| The sprout grew and grew, and soon it had big green leaves.
At the end of the summer, there was {harvest}.
{Name} was so proud. {He} learned that good things take time.
| "Waiting was hard, but it was worth it," said {name}.
"""


def _planting(w: Writer) -> str:
    w.ctx["harvest"] = w.pick(
        (
            "a big yellow sunflower",
            "a plant full of red tomatoes",
            "a big orange pumpkin",
            "a bush full of sweet berries",
        )
    )
    return PLANTING


SHADOW = """
One night, {name} was in bed. The room was dark and quiet.
| It was late at night, and {name} could not sleep.
Then {he} saw a big shadow on the wall.
| Suddenly, {he} saw something dark in the corner of the room.
It looked like {monster}!
| It was big and dark, and it looked like {monster}.

{Name} was so scared that {he} could not move.
| {Name} pulled {his} blanket up to {his} nose.
"{Pname}!" {he} called. "There is a monster in my room!"
| "Help! {Pname}, come quick!" {name} cried.

{Pname} came in and turned on the lamp.
| {Pname} came running and switched on the light.
The monster was just {real}.
| There was no monster. It was only {real}.
{Name} laughed.
| "Oh!" said {name}, and {he} began to giggle.

"Shadows can look scary in the dark," said {pname}. "But the light shows what is really there."
{Pname} left a little lamp on by the bed.
| {Pname} gave {name} a small night light.
? {Name} hugged {his} {dobj} and closed {his} eyes.
From that night on, {name} was not afraid of the dark.
| {Name} slept well all night long.
"""
# what the shadow looks like, and what it really is
SHADOWS = (
    ("a giant with long arms", "the coat on the chair"),
    ("a big hairy bear", "a pile of clothes on the floor"),
    ("a tall witch with a pointy hat", "the tree outside the window, moving in the wind"),
    ("a dragon with wings", "{his} {obj} on the shelf"),
    ("a monster with big ears", "the lamp with its round shade"),
)  # fmt: skip


def _shadow(w: Writer) -> str:
    monster, real = w.pick(SHADOWS)
    w.ctx.update(monster=monster, real=w.fill(real))
    return SHADOW


DOCTOR = """
One morning, {name} did not feel well.
| One day, {name} woke up with a sore throat.
{His} head was hot, and {he} felt very tired.
| {He} had a cough, and {he} did not want to play.
{Pname} said, "We need to go and see the doctor."

{Name} was scared of the doctor.
| {Name} did not want to go.
"Will it hurt?" {he} asked.
| "I don't like the doctor," {he} said. "What if I need a shot?"
"The doctor will help you feel better," said {pname}. "I will stay with you."
| {Pname} held {his} hand. "You are brave. I will be right here," {phe} said.

{Dname} was kind and had a big smile.
| {Dname} smiled and said, "Hello, {name}. Let's see how you are."
{Dhe} looked in {name}'s ears and mouth.
| {Dhe} listened to {name}'s heart. "Thump, thump. A strong heart!" {dhe} said.
"You have a cold," said {dname}. "Drink lots of water and rest, and you will be well soon."
? {Dname} gave {name} a sticker for being so brave.

At home, {name} rested in bed and drank warm soup.
| {Name} went home and slept a lot.
After a few days, {he} felt much better.
| Soon {he} was well again and ready to play.
{Name} learned that doctors are there to help.
| "The doctor was not scary at all," {name} told {his} friend {fname}.
"""

DOCTOR_SURNAMES = ("Bell", "Green", "Brown", "Lee", "Park", "Moon", "Hill", "Gray")


def _doctor(w: Writer) -> str:
    surname = w.pick(DOCTOR_SURNAMES)
    w.add_character("d", Character(f"Doctor {surname}", "doctor", w.rng.random() < 0.5))
    return DOCTOR


LOST_PET = """
{Name} had a pet {qkind} named {qname}.
| {Name} had a {qtrait} little {qkind} called {qname}.
Every day, {name} and {qname} played together in the yard.
| {Qname} followed {name} everywhere.

One {time}, {name} left the {exit} open.
| One day, the {exit} was left open by mistake.
{Qname} saw {distraction} and ran out after it.
| {Qname} ran out to chase {distraction}.
When {name} came to play, {qname} was gone!
| Later, {name} called {qname}, but {qhe} did not come.

{Name} looked in the yard and under the bed.
| {Name} looked everywhere in the house.
"{Qname}! Where are you?" {he} called.
| "{Qname}, come home!" {he} shouted.
{Name} began to cry. "What if {qhe} never comes back?"
| {Name} felt {bad} and scared.

{Pname} and {his} friend {fname} helped {name} look.
| {Name} and {his} friend {fname} made signs with a picture of {qname} and put them up in town.
They walked all the way to {place}.
| Then they went to look {at_place}.
There, {spot3}, they heard a small sound.

It was {qname}! {Qhe} was dirty and tired, but safe.
| It was {qname}, looking at them with big eyes.
{Name} hugged {qname} tight. "I missed you so much!" {he} said.
From that day on, {name} always closed the {exit}.
| {Name} learned to always close the {exit}, and {qname} learned to stay home.
"""


def _lost_pet(w: Writer) -> str:
    taken = {w.ctx["name"], w.ctx["fname"]}
    name = w.pick(tuple(n for n in PET_NAMES if n not in taken))
    kind = w.pick(("dog", "puppy", "cat", "kitten", "bunny", "turtle"))
    w.add_character("q", Character(name, kind, w.rng.random() < 0.5))
    w.ctx["qtrait"] = w.pick(("playful", "fluffy", "sweet", "funny", "curious"))
    w.ctx["exit"] = w.pick(("gate", "door", "garden gate", "back door"))
    return LOST_PET


ZOO = """
One {weather} day, {pname} took {name} to the zoo.
| {Name} and {pname} went to the zoo on a {weather} {time}.
{Name} wore {his} {dobj}.
They saw a tall giraffe, a big gray elephant and a lion with a long mane.
| First they saw the lions. Then they saw the elephants and the zebras.
| {Name} liked the penguins best. They waddled and slid on their bellies.

Then they came to the monkeys.
A little monkey reached out and grabbed {name}'s {obj}!
| A cheeky monkey jumped close, took {name}'s {obj} and ran up a tree.
"Hey! Give it back!" shouted {name}.
| "That is my {obj}!" {name} cried.
The monkey held the {obj} up high and made a funny face.

{Name} wanted to be angry, but {he} started to laugh.
| Everyone laughed, and even {name} had to smile.
A zookeeper came with a banana. "Let's trade," she said to the monkey.
| Then a zookeeper came and held out a banana.
The monkey took the banana and dropped the {obj}.

The zookeeper gave the {obj} back to {name}. "Thank you!" said {name}.
| "Here you go," said the zookeeper, and gave {name} {his} {obj}.
That night, {name} told {his} friend {fname} all about the monkey who wanted {his} {obj}.
| It was the funniest day at the zoo ever.
"""


def _zoo(w: Writer) -> str:
    return ZOO


CLEAN_ROOM = """
{Name}'s room was very messy.
| There were toys all over {name}'s floor.
There were clothes on the bed and blocks on the floor.
| Books, socks and toys were everywhere.
One day, {name} wanted to play with {his} {dobj}, but {he} could not find it.
| One {time}, {name} looked for {his} {obj}, but it was lost in the mess.

"Where is my {obj}?" {he} asked.
| {Name} looked and looked, but there was too much mess.
"If you clean your room, you may find it," said {pname}.
| {Pname} said, "A clean room makes it easy to find things."
{Name} did not want to clean. Cleaning was boring.
| "But cleaning is no fun," said {name}.

Then {pname} had an idea. "Let's make it a game," {phe} said. \
"Can you clean up before the song ends?"
| "Let's sing a song while we clean," said {pname}.
{Name} put the books on the shelf and the clothes in the basket.
| {Name} picked up the blocks and put them in the box.
{He} put the socks in the drawer.
? {He} sang a happy song the whole time.

Under the bed, {he} found {his} {obj}!
| When {he} picked up the last pile of clothes, there was {his} {obj}!
"I found it!" {name} shouted.
The room looked clean and nice.
| Now {name} had lots of room to play.
{Name} learned that cleaning up can be fun.
| From then on, {name} put {his} toys away every night.
"""


def _clean_room(w: Writer) -> str:
    return CLEAN_ROOM


TOO_SMALL = """
{Name} was the smallest of all {his} friends.
| {Name} was very small, smaller than everyone {he} knew.
The others were bigger and faster.
| The others could run faster and jump higher.
Sometimes they laughed and said, "You are too small to play with us!"
{Name} felt {bad}.

One {weather} day, the others were playing with a ball {at_place}.
| One day, the friends were playing catch {at_place}.
The ball rolled into a narrow hole under an old fence.
| Someone kicked the ball too hard, and it rolled into a long, thin pipe.
They were all too big to reach it.
| "Oh no! We will never get it back," they said.

"I can do it," said {name}.
{Name} was small enough to fit. {He} crawled in and pushed the ball out.
| {He} crept into the small space and got the ball.
Everyone cheered.
| "Hooray!" everyone shouted.

"We are sorry we laughed at you," said {his} friend {fname}. "You saved the game!"
| {His} friend {fname} said, "You were a big help. Will you play with us?"
From that day on, {name} always played with them.
| Now nobody laughed at {name} anymore.
{Name} learned that being small can be a good thing.
| They all learned that everyone is good at something.
"""


def _too_small(w: Writer) -> str:
    return TOO_SMALL


NEW_FOOD = """
One evening, {pname} made {food} for dinner.
{Name} looked at the plate. {Look}.
"I don't like it," said {name}. "It looks yucky."
| {Name} crossed {his} arms. "I will not eat that!"

"How do you know you don't like it?" asked {pname}. "You have never tried it."
| "Just try one little bite," said {pname}.
{Name} thought about it.
| {Name} looked at the food for a long time.
{He} took a very small bite.
| Slowly, {he} picked up a tiny piece and put it in {his} mouth.
{He} chewed and chewed.

"Mmm! It is yummy!" said {name}.
| {Name}'s eyes went wide. "It is good!" {he} said.
{He} ate it all and asked for more.
| Soon {his} plate was empty.
{Name} learned that it is good to try new things.
| From then on, {name} always tried one bite of a new food.
"""
FOODS = (
    ("green beans", "They were long and green"),
    ("soup with carrots and peas", "It was orange and thick"),
    ("fish with rice", "It had a funny smell"),
    ("broccoli", "It looked like a tiny green tree"),
    ("mushrooms", "They were brown and soft"),
)  # fmt: skip


def _new_food(w: Writer) -> str:
    food, look = w.pick(FOODS)
    w.ctx.update(food=food, look=look)
    return NEW_FOOD


# each plot, and what it needs: "child" for a child hero, thing tags for the loved thing
PLOTS: tuple[tuple[Callable[[Writer], str], str], ...] = (
    (_lost_thing, ""), (_stuck_up_high, "high"), (_sharing, "toy"), (_new_friend, ""),
    (_storm, ""), (_hurt_bird, ""), (_build, ""), (_race, ""), (_lost_way, ""), (_picnic, ""),
    (_rainy_day, ""), (_learn_skill, ""), (_gift, ""), (_broken, "throw"), (_strange_sound, ""),
    (_planting, ""), (_shadow, ""), (_doctor, ""), (_lost_pet, "child"), (_zoo, "wear child"),
    (_clean_room, "toy"), (_too_small, ""), (_new_food, ""),
)  # fmt: skip
