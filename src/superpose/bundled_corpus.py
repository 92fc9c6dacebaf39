"""Bundled English/French corpus for the offline demo, generated from our own grammar.

The demo trains a small English base model and fine-tunes it on French, so each language needs
enough variety for a small model to learn its statistics: word order, agreement, function words,
punctuation. One planner decides who does what, where and when (shared vocabulary concepts and
themes), and two grammars realise it: English (agreement, do-support, a/an, adjective order) and
French (gender, elision, contractions, adjective agreement and placement, présent, imparfait,
passé composé with avoir/être, ne ... pas, « » dialogue). Every sentence comes from the tables and
rules below; no text is copied from any book, website or dataset.
"""
from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

LANGUAGES = ("en", "fr")
SPLITS = ("train", "valid", "test")
DEFAULT_SIZES = {"train": 2500, "valid": 250, "test": 250}
THEMES = "vtnfscwk"  # village, travel, nature/weather, family, sea, city, work, kitchen/food

# ---------------------------------------------------------------------------------------------
# Vocabulary. Nouns: "english[/plural]|gender french[/plural]|themes[|extra]". An empty theme
# list fits every theme; "h" marks a place that can be someone's own ("her garden"); "M" marks
# a mass noun; for places the 4th field is "english-prep french-prep[/french-motion-prep]"; a
# trailing list of adjectives restricts the ones a noun takes.
_PEOPLE = """
fisherman/fishermen|m pêcheur|s; baker|m boulanger|vk; baker|f boulangère|vk; farmer|m fermier|vw;
farmer|f fermière|vw; teacher|m instituteur|fw; teacher|f institutrice|fw; doctor|m médecin|cw; nurse|f infirmière|cw;
nurse|m infirmier|cw; sailor|m marin|st; captain|m capitaine|s; neighbour|m voisin|vf; neighbour|f voisine|vf;
traveller|m voyageur|t; traveller|f voyageuse|t; driver|m chauffeur|tc; merchant|m marchand|vc;
merchant|f marchande|vc; painter|m peintre|cn; student|m étudiant|c; student|f étudiante|c; waiter|m serveur|ck;
waitress|f serveuse|ck; cook|m cuisinier|k; cook|f cuisinière|k; mayor|m maire|v; postman/postmen|m facteur|vw;
carpenter|m menuisier|w; gardener|m jardinier|vn; gardener|f jardinière|vn; shepherd|m berger|vn;
musician|m musicien|c; musician|f musicienne|c; miller|m meunier|v; blacksmith|m forgeron|vw; engineer|m ingénieur|cw;
stranger|m inconnu|t; stranger|f inconnue|t; friend|m ami|f; friend|f amie|f; guest|m invité|f; guest|f invitée|f;
writer|m écrivain|c; clerk|m employé|cw; clerk|f employée|cw; grocer|m épicier|vk; grocer|f épicière|vk;
butcher|m boucher|vk; pilot|m pilote|t; mother|f mère|f; father|m père|f; grandmother|f grand-mère/grands-mères|f;
grandfather|m grand-père/grands-pères|f; uncle|m oncle|f; aunt|f tante|f; brother|m frère|f; sister|f sœur|f;
son|m fils|f; daughter|f fille|f; boy|m garçon|v; girl|f fillette|v; child/children|m enfant|fv; man/men|m homme|;
woman/women|f femme|; cousin|m cousin|f; cousin|f cousine|f; husband|m mari|f; wife/wives|f épouse|f
"""
_ANIMALS = """
dog|m chien|vf; cat|m chat|vf; horse|m cheval|vw; cow|f vache|v; goat|f chèvre|vn; sheep/sheep|m mouton|vn;
bird|m oiseau|n; gull|f mouette|s; fox|m renard|n; donkey|m âne|v; hen|f poule|vk; duck|m canard|vn;
mouse/mice|f souris|v; rabbit|m lapin|vn; pig|m cochon|v; crab|m crabe|s; owl|m hibou/hiboux|n; crow|m corbeau|n;
bee|f abeille|n; butterfly|m papillon|n; frog|f grenouille|n; squirrel|m écureuil|n; hedgehog|m hérisson|n;
swan|m cygne|n; lamb|m agneau|v; kitten|m chaton|f; puppy|m chiot|f; snail|m escargot|n; heron|m héron|n;
seal|m phoque|s; wolf/wolves|m loup|n; pigeon|m pigeon|c
"""
_FOOD = """
bread|m pain|kv|M; cheese|m fromage|k|M; apple|f pomme|kv; soup|f soupe|k|M; cake|m gâteau|kf; pear|f poire|k;
egg|m œuf|kv; onion|m oignon|k; potato/potatoes|f pomme de terre/pommes de terre|k; tomato/tomatoes|f tomate|k;
carrot|f carotte|k; butter|m beurre|k|M; honey|m miel|k|M; jam|f confiture|k|M; orange|f orange|k; lemon|m citron|k;
cherry|f cerise|kn; plum|f prune|kn; tart|f tarte|kf; sausage|f saucisse|k; rice|m riz|k|M; salad|f salade|k;
chicken|m poulet|k; ham|m jambon|k|M; biscuit|m biscuit|kf; grape|m raisin|k; bean|m haricot|k;
mushroom|m champignon|kn; melon|m melon|k; strawberry|f fraise|kn; olive|f olive|k; walnut|f noix|k;
flour|f farine|k|M; sugar|m sucre|k|M; meat|f viande|k|M; chocolate|m chocolat|kf|M; pancake|f crêpe|kf;
omelette|f omelette|k; peach|f pêche|k; cabbage|m chou/choux|k; leek|m poireau|k; fig|f figue|k;
croissant|m croissant|kc; sardine|f sardine|s; oyster|f huître|s; mussel|f moule|s; lobster|m homard|s;
fish/fish|m poisson|sk; sandwich|m sandwich|tc
"""
_DRINKS = """
water|f eau/eaux||M; milk|m lait|k|M; coffee|m café|kc|M; tea|m thé|kf|M; wine|m vin|k|M; juice|m jus|k|M;
lemonade|f limonade|kf|M; cider|m cidre|v|M; hot chocolate|m chocolat chaud|f|M
"""
_READABLE = """
book|m livre|; letter|f lettre|f; newspaper|m journal/journaux|c; map|f carte|t;
postcard|f carte postale/cartes postales|t; recipe|f recette|k; magazine|m magazine|c; notebook|m cahier|;
list|f liste|k; timetable|m horaire|t
"""
_TEXTS = "story|f histoire|f; poem|m poème|f"
_CONTAINERS = """
box|f boîte|; basket|m panier|vk; bag|m sac|; suitcase|f valise|t; bottle|f bouteille|k; bucket|m seau|s;
jug|f cruche|k; cup|f tasse|k; bowl|m bol|k; jar|m bocal|k; crate|f caisse|w; wallet|m portefeuille|c;
envelope|f enveloppe|; pot|f marmite|k; teapot|f théière|k; purse|m porte-monnaie/porte-monnaie|c
"""
_TOOLS = """
hammer|m marteau|w; knife/knives|m couteau|k; rope|f corde|s; net|m filet|s; ladder|f échelle|w; brush|f brosse|w;
spade|f pelle|vn; saw|f scie|w; axe|f hache|w; needle|f aiguille|f; broom|m balai|v; rake|m râteau|vn; oar|f rame|s;
lantern|f lanterne|s; wheelbarrow|f brouette|v; fishing rod|f canne à pêche/cannes à pêche|s; paintbrush|m pinceau|c
"""
_CLOTHING = """
hat|m chapeau|; coat|m manteau|; scarf/scarves|f écharpe|; glove|m gant|; shoe|f chaussure|; boot|f botte|;
dress|f robe|; shirt|f chemise|; jacket|f veste|; jumper|m pull|; apron|m tablier|k; cap|f casquette|;
sock|f chaussette|; raincoat|m imperméable|n
"""
_INSTRUMENTS = """
guitar|f guitare|; violin|m violon|; drum|m tambour|; piano|m piano|; flute|f flûte|; accordion|m accordéon|;
trumpet|f trompette|; harp|f harpe|
"""
_HOUSEHOLD = """
lamp|f lampe|; chair|f chaise|; table|f table|; clock|f horloge|; mirror|m miroir|; candle|f bougie|;
blanket|f couverture|; plate|f assiette|k; spoon|f cuillère|k; glass|m verre|k; pan|f casserole|k; key|f clé|;
door|f porte|; window|f fenêtre|; bed|m lit|f; shelf/shelves|f étagère|; bench|m banc|v; carpet|m tapis|;
curtain|m rideau|; oven|m four|k; sofa|m canapé|f; cupboard|m placard|k; radio|f radio|f; towel|f serviette|;
pillow|m oreiller|; kettle|f bouilloire|k; fork|f fourchette|k; floor|m plancher|; fence|f clôture|v; wall|m mur|v;
roof|m toit|v; gate|m portail|v; hut|f cabane|n
"""
_SMALL = """
ticket|m billet|t; photograph|f photo|tf; parcel|m colis|c; umbrella|m parapluie|n; ring|f bague|f; pencil|m crayon|;
stone|f pierre|n; shell|m coquillage|s; flower|f fleur|vn; ball|m ballon|f; toy|m jouet|f;
kite|m cerf-volant/cerfs-volants|n; coin|f pièce|c; present|m cadeau|f; watch|f montre|; necklace|m collier|f;
feather|f plume|n; leaf/leaves|f feuille|n; painting|m tableau|c; drawing|m dessin|f; doll|f poupée|f;
passport|m passeport|t; stamp|m timbre|c; camera|m appareil photo/appareils photo|t
"""
_VEHICLES = """
boat|m bateau|s; car|f voiture|c; bicycle|m vélo|v; bus|m bus|c; train|m train|t; cart|f charrette|v; ship|m navire|s;
tram|m tramway|c; taxi|m taxi|c; tractor|m tracteur|v; lorry|m camion|w; van|f camionnette|w
"""
_SOUNDS = "noise|m bruit|; song|f chanson|; voice|f voix|; bell|f cloche|v; music|f musique||M; cry|m cri|"
_PLACES = """
house|f maison|vfhi|in dans; kitchen|f cuisine|fkhri|in dans; garden|m jardin|vfnh|in dans; market|m marché|vkc|at à;
church|f église|vi|in dans/à; school|f école|fi|at à; station|f gare|tci|at à; harbour|m port|st|at à;
beach|f plage|sn|on sur/à; street|f rue|c|in dans; square|f place|vc|in sur; bridge|m pont|vc|on sur;
river|f rivière|n|in dans/à; forest|f forêt|n|in dans; field|m champ|vn|in dans; hill|f colline|n|on sur;
village|m village|v|in dans/à; farm|f ferme|vh|on à; shop|f boutique|chi|in dans; bakery|f boulangerie|vki|at à;
cafe|m café|ci|at à; restaurant|m restaurant|cki|in dans/à; library|f bibliothèque|ci|in dans/à;
museum|m musée|ci|in dans/à; office|m bureau/bureaux|cwhi|at à; factory|f usine|wi|in dans/à;
hospital|m hôpital|ci|at à; hotel|m hôtel|ti|at à; island|f île|s|on sur; mountain|f montagne|n|on sur/à;
lake|m lac|n|on sur/à; road|f route|t|on sur; path|m chemin|n|on sur; park|m parc|c|in dans/à;
castle|m château|ti|in dans/à; mill|m moulin|vi|at à; barn|f grange|vhi|in dans; attic|m grenier|fhri|in dans;
cellar|f cave|fhri|in dans; bedroom|f chambre|fhri|in dans; cliff|f falaise|s|on sur; lighthouse|m phare|s|at à;
quay|m quai|s|on sur; pier|f jetée|s|on sur; bay|f baie|s|in dans; sea|f mer|sn|in dans/à;
orchard|m verger|vh|in dans; vineyard|f vigne|v|in dans; meadow|m pré|n|in dans; valley|f vallée|n|in dans;
wood|m bois|n|in dans; cave|f grotte|n|in dans; tower|f tour|ci|in dans; classroom|f classe|fri|in dans;
courtyard|f cour|vh|in dans; garage|m garage|chi|in dans; workshop|m atelier|whi|in dans; town hall|f mairie|vi|at à;
post office|f poste|ci|at à; theatre|m théâtre|ci|at à; cinema|m cinéma|ci|at à; airport|m aéroport|ti|at à;
inn|f auberge|ti|at à; living room|m salon|fhri|in dans; pond|m étang|n|by au bord de/à
"""
_NATURE = """
sky/skies|m ciel|n|grey blue clear cloudy dark pale starry stormy; sun|m soleil|n|warm bright pale;
rain|f pluie|n|cold light fine; wind|m vent|ns|cold strong light icy warm; snow|f neige|n|white soft deep fresh;
fog|m brouillard|ns|thick grey; cloud|m nuage|n|grey dark white; wave|f vague|s|high strong;
moon|f lune|n|pale bright; tree|m arbre|nv|tall old green; grass|f herbe|n|green wet dry; air|m air|n|fresh cold warm;
sand|m sable|s|warm wet golden; light|f lumière|n|pale soft warm
"""
_TIMES_OF_DAY = """
morning|m matin||cold grey warm sunny quiet beautiful rainy windy foggy;
evening|m soir||cold warm quiet beautiful rainy windy stormy;
day|m jour||cold grey warm sunny quiet beautiful rainy windy foggy;
night|f nuit||cold dark quiet warm windy starry stormy silent;
afternoon|m après-midi/après-midi||warm sunny quiet rainy grey
"""
# Adjectives: "english|french forms|codes" with forms ms[/fs[/mp/fp[/liaison]]]; codes say which nouns
# take them (p person, a animal, f food, d drink, r readable, c container, o tool, w clothing,
# i instrument, h household, m small thing, v vehicle, l place, s sound) and flags: C colour or
# material (last in English, after the noun in French), A attributive only, P predicative only.
_ADJECTIVES = """
big|gros/grosse/gros/grosses|acohmv=apple,pear,melon,cabbage,cake,onion,potato,tomato,lobster,fish,sausage,orange,
peach; small|petit|afrcowihmvl; little|petit|acmhA; tall|grand|p=tree,tower; large|grand|lhcv; huge|énorme|alcv;
tiny|minuscule|acml; long|long/longue|wox=road,path,street,beach,bridge; short|court|wox=path,road,street;
wide|large|=street,road,river,bridge,valley,square; narrow|étroit|=street,path,road,bridge,valley;
deep|profond|c=river,lake,sea,bay,cave,valley,pond; high|haut|=wall,tower,cliff,mountain,fence,hill;
heavy|lourd|cohimv=book; light|léger/légère|cowm; round|rond|hcm; thick|épais/épaisse|wr=blanket,carpet,curtain,wall;
old|vieux/vieille/vieux/vieilles/vieil|pacorwihmvl;
ancient|ancien|rh=castle,church,tower,mill,bridge,forest,village,wall; young|jeune|pa;
new|nouveau/nouvelle/nouveaux/nouvelles/nouvel|porwcihmvlx;
modern|moderne|vh=factory,hospital,station,airport,hotel,office,library,museum,school; red|rouge|cwvhmC;
blue|bleu|cwvhmC; green|vert|cwvhmC=field,meadow,valley,hill,garden,park,orchard; yellow|jaune|cwvhmC;
white|blanc/blanche|cwvhmaC=house,church,tower,lighthouse; black|noir|cwvhmaC; brown|brun|cwhamC;
grey|gris/grise|cwvhmaC; pink|rose|cwhmC;
golden|doré|mwhC=bread,croissant,pancake,tart,cake,honey,sand,biscuit,chicken; purple|violet/violette|cwmC;
wooden|en bois|chvmCA; woollen|en laine|whCA; leather|en cuir|cwCA; iron|en fer|hoCA;
stone|en pierre|CA=bridge,house,wall,tower,church,mill,barn; straw|en paille|cwCA; copper|en cuivre|chCA;
beautiful|beau/belle/beaux/belles/bel|plwhmvax; pretty|joli|lwhm; good|bon|fdp; strange|étrange|plmsax;
lovely|charmant|pl; quiet|tranquille|=village,street,square,garden,library,beach,park,house,church,cafe,valley;
calm|calme|pa; noisy|bruyant|p=market,station,street,square,harbour,cafe,restaurant,factory,school,classroom;
busy|animé|=market,station,street,square,harbour,cafe,restaurant; busy|occupé|p;
crowded|bondé|v=market,station,square,street,beach,cafe,restaurant,museum,harbour;
empty|vide|c=street,square,beach,station,market,house,church,classroom,cafe,restaurant; full|plein|c;
clean|propre|whcv=kitchen,bedroom,street,house,classroom,workshop; dirty|sale|whcvp=kitchen,street,courtyard,workshop;
cheap|bon marché|wmri; expensive|cher/chère|wmrivh; broken|cassé|mhocv;
famous|célèbre|p=museum,castle,restaurant,theatre,hotel,church,market,bridge;
dark|sombre|=forest,cellar,attic,cave,wood,street,barn;
bright|lumineux|=kitchen,bedroom,living room,classroom,office,workshop,house,library;
warm|chaud|w=bread,soup,croissant,pancake,tart,cake,milk,tea,coffee,kitchen,bedroom,living room,house,
cafe,inn,bakery,blanket;
cold|froid|=soup,water,milk,wine,juice,lemonade,cider,chicken,ham,meat,church,cellar,attic,house,barn,castle,sea,
river,lake; hot|brûlant|=soup,coffee,tea,bread,pancake,croissant,chicken,omelette; wet|mouillé|wmpa;
dry|sec/sèche|w; soft|doux/douce|w=bread,cheese,butter,blanket,pillow,carpet,sofa,bed,towel;
hard|dur|=bread,biscuit,cheese,pear,peach; shiny|brillant|mvoh; rusty|rouillé|ov=gate,fence,key,lamp;
precious|précieux|m; useful|utile|om; strong|fort|pad; fresh|frais/fraîche|fd;
sweet|sucré|=cake,tart,biscuit,chocolate,jam,honey,pancake,strawberry,cherry,grape,fig,peach,melon,plum,pear,apple,
lemonade,juice,tea,coffee,cider;
salty|salé|=soup,ham,cheese,butter,sausage,fish,sardine,oyster,mussel,olive,walnut,water; delicious|délicieux|fd;
bitter|amer/amère|=coffee,tea,lemon,chocolate,olive,walnut; kind|gentil/gentille|pa; shy|timide|pa; brave|courageux|p;
clever|intelligent|pa; patient|patient|p; polite|poli|p; strict|sévère|p; honest|honnête|p; funny|drôle|psx;
curious|curieux|pa; cheerful|joyeux|p; lonely|solitaire|p; proud|fier/fière|pa; tired|fatigué|pa; hungry|affamé|pa;
happy|heureux|pa; sad|triste|pax; angry|fâché|p; worried|inquiet/inquiète|p; ready|prêt|pP; sick|malade|pa;
late|en retard|pP; surprised|surpris/surprise|pP; lazy|paresseux|pa; generous|généreux|p; rich|riche|p; poor|pauvre|p;
wise|sage|p; clumsy|maladroit|p; nervous|nerveux|pa; asleep|endormi|paP;
peaceful|paisible|=village,garden,valley,meadow,lake,park,river,beach,farm,orchard;
sunny|ensoleillé|=garden,beach,square,field,meadow,valley,orchard,vineyard,hill,courtyard;
cosy|douillet/douillette|=kitchen,bedroom,living room,inn,cafe,house,attic;
steep|raide|=path,road,hill,street,cliff,mountain; muddy|boueux|=path,road,field,farm,courtyard,meadow,river;
rainy|pluvieux|; windy|venteux|; foggy|brumeux|; clear|clair|d; cloudy|nuageux|; rough|agité|; pale|pâle|p;
icy|glacé|d; loud|fort|s; fine|fin|; starry|étoilé|; stormy|orageux|; sleepy|somnolent|pa; thirsty|assoiffé|pa;
friendly|aimable|p; grumpy|grincheux|pa; elegant|élégant|pw; careful|prudent|p;
hardworking|travailleur/travailleuse|p; gentle|doux/douce|pa; excited|excité|paP;
ripe|mûr|=apple,pear,cherry,plum,strawberry,peach,fig,grape,melon,tomato,orange;
juicy|juteux|=apple,pear,cherry,plum,strawberry,peach,fig,grape,melon,orange;
crunchy|croquant|=apple,carrot,biscuit,pear; wild|sauvage|a=flower,strawberry,garden,meadow;
frozen|gelé|=lake,river,pond,road,path,field,garden;
snowy|enneigé|=mountain,road,field,village,hill,garden,path,forest,street; flat|plat|=road,field,stone,roof,valley;
silent|silencieux|pa=street,church,forest,library,house,village,wood;
tidy|rangé|=bedroom,kitchen,attic,workshop,living room,classroom,cupboard,shelf,office;
messy|en désordre|=bedroom,kitchen,attic,workshop,living room,classroom,cupboard,office;
fragile|fragile|=glass,plate,cup,jar,mirror,bottle,bowl,teapot,lamp; sharp|tranchant|=knife,axe,saw,needle;
comfortable|confortable|=chair,bed,sofa,pillow,boot,shoe,bedroom,living room,inn,hotel,coat;
colourful|coloré|C=kite,dress,scarf,umbrella,painting,ball,shirt,sock,cap,toy;
striped|rayé|C=shirt,scarf,sock,umbrella,dress,towel,cap,curtain; spotted|à pois|C=dress,scarf,shirt,cup,umbrella;
torn|déchiré|=letter,map,newspaper,shirt,coat,book,ticket,curtain;
secret|secret/secrète|=letter,garden,path,map,recipe,door; lost|perdu|aA=key,wallet,ring,watch,glove,ticket,passport
"""
_PRENOMINAL = {"grand", "petit", "gros", "vieux", "jeune", "beau", "joli", "bon", "mauvais", "nouveau", "long", "haut",
               "gentil"}
_CLASHES = [set(g.split()) for g in (  # two adjectives from one group would contradict or repeat each other
    "big small little tall large huge tiny long short wide narrow deep high", "old new ancient modern young",
    "warm cold hot icy fresh", "clean dirty", "empty full crowded busy", "quiet noisy busy peaceful calm loud",
    "dark bright pale sunny", "happy sad angry cheerful worried calm tired proud surprised nervous lonely",
    "sweet salty bitter", "wet dry", "heavy light")]
_STATES = ("tired", "hungry", "happy", "sad", "worried", "late", "ready", "sick", "surprised", "nervous", "proud")

# Verbs: "english|french|frame|arguments|places". English is "base[,past[,pp[,ing]]] [particle]"; French
# is "[se ]infinitive[ fixed words][+preposition]". Frames: i intransitive (arguments = subjects,
# default person), t transitive (arguments = objects), m motion (argument = English preposition,
# "@" for the place's own), d give-like (object and recipient), u put. Flags: s stative, g generic object.
_VERBS = """
walk|marcher|i|person,animal|park,forest,beach,street,field,path,road,village,garden,square,pier,harbour,meadow;
run,ran,run|courir|i|person,animal|park,beach,field,garden,meadow,path,forest,street;
sleep,slept|dormir|i|person,animal|bedroom,attic,barn,living room,garden,hotel,inn; laugh|rire|i; smile|sourire|i;
sing,sang,sung|chanter|i|person,bird; dance|danser|i|person|square,garden,kitchen,beach,living room,inn;
wait|attendre|i|person|station,harbour,street,square,cafe,quay,bridge,school,hospital,airport,post office;
rest|se reposer|i|person,animal|garden,bedroom,living room,beach,meadow,park,inn;
work|travailler|i|person|office,factory,farm,field,bakery,workshop,shop,garden,kitchen,harbour,hospital,school,mill;
swim,swam,swum|nager|i|person,dog,duck,swan|sea,river,lake,bay;
play|jouer|i|person,dog,cat,kitten,puppy|garden,park,courtyard,beach,street,square,field,attic,meadow; shout|crier|i;
whisper|chuchoter|i; cry|pleurer|i|person|-; jump|sauter|i|person,animal|garden,field,meadow,river,beach,park;
get,got,got up|se lever|i|person|-; wake,woke,woken up|se réveiller|i|person,animal|-; hurry|se dépêcher|i|person|-;
read,read,read|lire|i|person|library,bedroom,garden,living room,cafe,park,classroom;
write,wrote,written|écrire|i|person|library,bedroom,office,living room,cafe,classroom; cook|cuisiner|i|person|kitchen;
fish|pêcher|i|person|river,lake,harbour,pier,quay,bay; travel,travelled,travelled,travelling|voyager|i|person|-;
arrive|arriver|i|person|station,harbour,airport,hotel,inn,school,office,village,market; leave,left|partir|i|person|-;
stay|rester|i|person|house,garden,village,hotel,inn,farm,island; come,came,come back|revenir|i|person|-;
climb|grimper|i|person,cat,squirrel,goat|hill,cliff,mountain; think,thought|réfléchir|i|person|-;
hesitate|hésiter|i|person|-; knit|tricoter|i|person|living room,bedroom,garden;
garden|jardiner|i|person|garden,orchard; study|étudier|i|person|library,bedroom,classroom,school;
paint|peindre|i|person|garden,workshop,park,beach,square,attic,harbour;
draw,drew,drawn|dessiner|i|person|garden,park,beach,classroom,living room,square;
bark|aboyer|i|dog,puppy|garden,street,courtyard,farm,field;
fly,flew,flown|voler|i|bird,gull,owl,crow,bee,butterfly,duck,swan,pigeon|-;
eat,ate,eaten|manger|i|person,animal|kitchen,garden,cafe,restaurant,inn;
sit,sat,sat down|s'asseoir|i|person|garden,kitchen,living room,cafe,square,beach,park; shiver|trembler|i|person|-;
whistle|siffler|i; sigh|soupirer|i|person|-; row|ramer|i|person|sea,river,lake,bay;
go,went,gone for a walk|se promener|i|person|park,forest,beach,street,field,path,road,village,garden,square,pier,
 harbour,meadow,valley,wood; go,went,gone shopping|faire les courses|i|person|market,shop,bakery,square;
have,had,had breakfast|prendre le petit déjeuner|i|person|kitchen,cafe,garden,hotel,inn;
have,had,had lunch|déjeuner|i|person|cafe,restaurant,garden,kitchen,inn,beach,park;
have,had,had dinner|dîner|i|person|kitchen,restaurant,inn,hotel,living room; eat,ate,eaten|manger|t|food;
drink,drank,drunk|boire|t|drink;
cook|préparer|t|soup,cake,tart,omelette,chicken,fish,rice,salad,pancake,sausage,meat,potato,mushroom|kitchen,
restaurant,inn,bakery; buy,bought|acheter|t|food,drink,clothing,readable,small,container,instrument,tool;
sell,sold|vendre|t|food,drink,clothing,readable,small,container,tool;
carry|porter|t|container,tool,instrument,small,readable;
find,found|trouver|tn|small,readable,tool,clothing,animal,container; lose,lost|perdre|tn|small,readable,clothing,tool;
look for|chercher|t|small,readable,clothing,tool,animal,container,person;
open|ouvrir|t|box,bag,suitcase,door,window,letter,book,basket,bottle,jar,envelope,parcel,cupboard,present,umbrella,
 gate; close|fermer|t|box,bag,suitcase,door,window,book,jar,cupboard,umbrella,gate;
read,read,read|lire|t|readable,text; write,wrote,written|écrire|t|letter,postcard,poem,story,list,recipe;
paint|peindre|t|door,gate,chair,table,boat,fence,wall,shelf,cupboard,bench,hut;
draw,drew,drawn|dessiner|t|house,boat,cat,dog,horse,flower,map,bird,castle,tree;
visit|visiter|t|museum,castle,church,market,farm,island,library,village,garden,mill,lighthouse,factory,theatre,
 vineyard,cave; visit|rendre visite+à|t|person;
clean|nettoyer|t|kitchen,bedroom,house,attic,window,car,boat,oven,floor,table,shoe,bicycle,cellar,workshop;
wash|laver|t|clothing,plate,glass,cup,bowl,car,dog,towel,blanket,spoon,fork,pan;
watch|regarder|t|animal,person,sea,sky,wave,boat,ship,moon,train;
feed,fed|nourrir|t|dog,cat,horse,cow,goat,sheep,hen,duck,rabbit,pig,lamb,kitten,puppy,donkey,swan,pigeon;
follow|suivre|t|person,dog,cat,fox; help|aider|t|person; meet,met|rencontrer|t|person; call|appeler|t|person,dog,cat;
wait for|attendre|t|person,bus,train,boat,taxi,tram,letter,parcel;
bring,brought|apporter|t|food,drink,small,readable,container,clothing;
take,took,taken|prendre|t|small,container,readable,clothing,tool,bus,train,tram,taxi;
hold,held|tenir|t|small,container,tool; repair|réparer|t|tool,household,vehicle,clock,net,shoe,watch;
build,built|construire|t|boat,wall,fence,hut,kite,box,table,chair,bench,shelf; fill|remplir|t|container;
empty|vider|t|container; hide,hid,hidden|cacher|t|small,readable;
pick|cueillir|t|flower,apple,cherry,pear,plum,strawberry,mushroom,grape,fig,peach|orchard,garden,meadow,forest,wood,
field,vineyard;
catch,caught|attraper|t|fish,crab,ball,mouse,rabbit,butterfly,lobster|river,lake,beach,harbour,garden,field,meadow;
play|jouer+de|t|instrument; listen to|écouter|t|radio,bird,musician,music,sea,song,story;
hear,heard|entendre|tn|sound,bird,dog,owl,sea; see,saw,seen|voir|tn|animal,person,vehicle,lighthouse,island,castle;
smell|sentir|t|food,flower,sea; forget,forgot,forgotten,forgetting|oublier|tn|small,readable,clothing;
break,broke,broken|casser|tn|glass,plate,cup,bowl,jar,bottle,mirror,lamp,window,chair,toy,watch;
choose,chose,chosen|choisir|t|food,clothing,readable,small; taste|goûter|t|food,drink; share|partager|t|food;
cut,cut,cut|couper|t|bread,cake,cheese,ham,apple,onion,rope,tart,melon,sausage|kitchen,restaurant,inn,bakery;
plant|planter|t|tree,flower,potato,tomato,bean,cabbage,leek,carrot; water|arroser|t|flower,garden,tree;
push|pousser|t|cart,bicycle,door,wheelbarrow,gate; pull|tirer|t|rope,cart,net,door,curtain;
throw,threw,thrown|lancer|t|ball,stone,net,shell; lift|soulever|t|container,chair,table,bench;
fold|plier|t|clothing,blanket,towel,letter,map,newspaper;
sweep,swept|balayer|t|kitchen,bedroom,courtyard,floor,street,workshop; load|charger|t|cart,boat,lorry,car,van;
drive,drove,driven|conduire|t|car,lorry,bus,tractor,taxi,van;
cross|traverser|t|street,bridge,river,square,field,forest,road,bay,valley,meadow; climb|gravir|t|hill,mountain,cliff;
leave,left|quitter|t|village,house,harbour,station,farm,office,island,school,hotel;
enter|entrer+dans|t|kitchen,house,church,shop,bakery,library,museum,barn,cave,classroom,workshop,living room;
thank|remercier|t|person; kiss|embrasser|t|person; greet|saluer|t|person; invite|inviter|t|person;
answer|répondre+à|t|letter,person; phone|téléphoner+à|t|person; wear,wore,worn|porter|t|clothing;
like|aimer|tsg|food,drink,animal,music; love|adorer|tsg|food,drink,animal; hate|détester|tsg|food,drink;
want|vouloir|ts|food,drink,toy,doll,kite,ball,clothing; go,went,gone|aller|m|to; walk|marcher+jusqu'à|m|to;
run,ran,run|courir+jusqu'à|m|to; drive,drove,driven|conduire+jusqu'à|m|to; return|retourner|m|to;
hurry|se dépêcher d'aller|m|to; come,came,come|venir|m|to; cycle|aller à vélo|m|to;
sail|naviguer+jusqu'à|m|to|island,harbour,bay,lighthouse; arrive|arriver|m|@;
give,gave,given|donner|d|food,small,readable; send,sent|envoyer|d|letter,parcel,postcard,present,photograph;
show,showed,shown|montrer|d|small,readable; lend,lent|prêter|d|readable,tool,umbrella,bicycle,clothing;
tell,told|raconter|d|story; knock on|frapper+à|t|door,window,gate; ring,rang,rung|sonner|t|bell;
tie|attacher|t|rope,boat,horse,dog,donkey,goat,scarf;
hang,hung|accrocher|t|coat,hat,painting,lantern,photograph,mirror,curtain,scarf,jacket;
mend|raccommoder|t|sock,shirt,coat,jumper,net,dress,glove; iron|repasser|t|shirt,dress,towel,apron,jacket;
unload|décharger|t|cart,boat,lorry,van,car;
peel|éplucher|t|potato,apple,orange,carrot,onion,pear,peach|kitchen,restaurant,inn,bakery,garden;
bake|cuire|t|bread,cake,tart,biscuit,croissant|kitchen,bakery;
grill|griller|t|sausage,fish,bread,chicken,sardine,meat|kitchen,restaurant,inn,bakery,garden,beach;
warm up|réchauffer|t|soup,milk,bread,water,hot chocolate|kitchen,restaurant,inn,bakery; milk|traire|t|cow,goat,sheep;
brush|brosser|t|horse,dog,donkey,coat,cat; chase|poursuivre|t|cat,fox,rabbit,mouse,ball,hen,duck,pigeon,squirrel;
stroke|caresser|t|cat,dog,horse,kitten,puppy,donkey,lamb,goat,rabbit;
photograph|photographier|t|castle,lighthouse,church,bridge,boat,sea,animal,tower,mill;
admire|admirer|t|painting,castle,sea,garden,drawing,sky,tree,boat,church;
describe|décrire|t|castle,garden,painting,island,village,house,drawing;
explain|expliquer|t|recipe,map,story,timetable,list; copy|recopier|t|recipe,list,poem,letter,map,drawing;
sign|signer|t|letter,postcard,list,drawing,painting;
tear,tore,torn|déchirer|t|letter,map,newspaper,shirt,ticket,envelope;
measure|mesurer|t|table,wall,rope,window,door,carpet,curtain;
weigh|peser|t|apple,flour,sugar,potato,parcel,fish,cheese,suitcase,melon;
order|commander|t|coffee,tea,soup,cake,omelette,wine,sandwich,salad,lemonade,pancake,hot chocolate;
explore|explorer|t|forest,cave,island,castle,valley,attic,cellar,wood;
decorate|décorer|t|cake,house,tree,table,kitchen,tart,bedroom;
borrow|emprunter|t|book,bicycle,umbrella,ladder,hammer,map,car,newspaper; keep,kept|garder|t|small,readable;
sharpen|aiguiser|t|knife,axe,saw; snore|ronfler|i|person,dog,cat|bedroom,living room,attic,barn;
cough|tousser|i|person|-; sneeze|éternuer|i|person,cat,dog|-; yawn|bâiller|i|person,cat,dog|-;
sew,sewed,sewn|coudre|i|person|living room,bedroom,kitchen,garden,workshop; pray|prier|i|person|church;
blush|rougir|i|person|-;
fall,fell,fallen asleep|s'endormir|i|person,animal|bedroom,living room,garden,beach,attic,barn;
get,got,got dressed|s'habiller|i|person|bedroom; go,went,gone to bed|se coucher|i|person|-;
stop|s'arrêter|i|person,animal|bridge,square,street,road,path,cafe,inn;
turn back|faire demi-tour|i|person|road,path,bridge;
get,got,got lost|se perdre|i|person,animal|forest,wood,valley,street,village,mountain;
calm down|se calmer|i|person,animal|-; worry|s'inquiéter|i|person|-; head|se diriger+vers|m|for;
swim,swam,swum|nager+jusqu'à|m|to|island,beach,pier,quay,bay;
row|ramer+jusqu'à|m|to|island,harbour,beach,pier,quay,lighthouse; offer|offrir|d|present,flower,food,drink;
put,put,put|mettre|u; place|poser|u
"""
_FR_IRREGULAR = {  # présent (6 persons) | participe passé
    "être": "suis es est sommes êtes sont|été", "avoir": "ai as a avons avez ont|eu",
    "aller": "vais vas va allons allez vont|allé", "faire": "fais fais fait faisons faites font|fait",
    "prendre": "prends prends prend prenons prenez prennent|pris",
    "venir": "viens viens vient venons venez viennent|venu", "tenir": "tiens tiens tient tenons tenez tiennent|tenu",
    "voir": "vois vois voit voyons voyez voient|vu", "dire": "dis dis dit disons dites disent|dit",
    "pouvoir": "peux peux peut pouvons pouvez peuvent|pu", "vouloir": "veux veux veut voulons voulez veulent|voulu",
    "mettre": "mets mets met mettons mettez mettent|mis", "lire": "lis lis lit lisons lisez lisent|lu",
    "écrire": "écris écris écrit écrivons écrivez écrivent|écrit", "boire": "bois bois boit buvons buvez boivent|bu",
    "partir": "pars pars part partons partez partent|parti", "dormir": "dors dors dort dormons dormez dorment|dormi",
    "courir": "cours cours court courons courez courent|couru",
    "ouvrir": "ouvre ouvres ouvre ouvrons ouvrez ouvrent|ouvert",
    "offrir": "offre offres offre offrons offrez offrent|offert",
    "cueillir": "cueille cueilles cueille cueillons cueillez cueillent|cueilli",
    "suivre": "suis suis suit suivons suivez suivent|suivi", "rire": "ris ris rit rions riez rient|ri",
    "sourire": "souris souris sourit sourions souriez sourient|souri",
    "sentir": "sens sens sent sentons sentez sentent|senti",
    "revenir": "reviens reviens revient revenons revenez reviennent|revenu",
    "conduire": "conduis conduis conduit conduisons conduisez conduisent|conduit",
    "construire": "construis construis construit construisons construisez construisent|construit",
    "peindre": "peins peins peint peignons peignez peignent|peint",
    "asseoir": "assieds assieds assied asseyons asseyez asseyent|assis",
    "cuire": "cuis cuis cuit cuisons cuisez cuisent|cuit", "coudre": "couds couds coud cousons cousez cousent|cousu",
    "traire": "trais trais trait trayons trayez traient|trait",
    "décrire": "décris décris décrit décrivons décrivez décrivent|décrit",
    "poursuivre": "poursuis poursuis poursuit poursuivons poursuivez poursuivent|poursuivi",
    "endormir": "endors endors endort endormons endormez endorment|endormi",
}
_FR_ETRE = {"aller", "venir", "revenir", "arriver", "partir", "entrer", "sortir", "rester", "tomber", "retourner"}

# Weather: English present | present now | past state | past event | French présent | imparfait | passé composé.
_WEATHER = """
it rains|it is raining|it was raining|it rained|
    il pleut|il pleuvait|il a plu;
it snows|it is snowing|it was snowing|it snowed|
    il neige|il neigeait|il a neigé;
the wind blows|the wind is blowing|the wind was blowing|the wind blew|
    le vent souffle|le vent soufflait|le vent a soufflé;
the sun shines|the sun is shining|the sun was shining|the sun shone|
    le soleil brille|le soleil brillait|le soleil a brillé;
it is cold|it is cold|it was cold|it was cold|
    il fait froid|il faisait froid|il a fait froid;
it is warm|it is warm|it was warm|it was warm|
    il fait chaud|il faisait chaud|il a fait chaud;
the weather is fine|the weather is fine|the weather was fine|the weather was fine|
    il fait beau|il faisait beau|il a fait beau;
there is fog|there is fog|there was fog|a thick fog came|
    il y a du brouillard|il y avait du brouillard|un épais brouillard est arrivé;
there is a storm|there is a storm|there was a storm|a storm broke|
    il y a un orage|il y avait un orage|un orage a éclaté;
it starts to rain|it is starting to rain|it was starting to rain|it started to rain|
    il commence à pleuvoir|il commençait à pleuvoir|il a commencé à pleuvoir
"""
# Time expressions: P past event, H habit, N now, F future.
_TIMES = """
yesterday|hier|P; last week|la semaine dernière|P; last summer|l'été dernier|P; last winter|l'hiver dernier|P;
that morning|ce matin-là|P; that evening|ce soir-là|P; the next day|le lendemain|P; one morning|un matin|P;
one evening|un soir|P; one day|un jour|P; a few days later|quelques jours plus tard|P;
an hour later|une heure plus tard|P; after lunch|après le déjeuner|PH; before dinner|avant le dîner|PH;
at dawn|à l'aube|PH; at noon|à midi|PH; at night|la nuit|H; in the morning|le matin|H; in the evening|le soir|H;
in the afternoon|l'après-midi|H; every morning|chaque matin|H; every evening|chaque soir|H;
every day|tous les jours|H; every week|chaque semaine|H; after school|après l'école|PH; in spring|au printemps|H;
in summer|en été|H; in autumn|en automne|H; in winter|en hiver|H; today|aujourd'hui|N; this morning|ce matin|NP;
tonight|ce soir|NF; now|maintenant|N; tomorrow|demain|F; this afternoon|cet après-midi|NPF;
next week|la semaine prochaine|F; soon|bientôt|F
"""
_MANNER = """
slowly|lentement; quickly|vite; quietly|doucement; carefully|avec soin; happily|joyeusement; patiently|patiemment;
early|tôt; late|tard; well|bien; proudly|fièrement; silently|en silence; sadly|tristement; calmly|calmement;
for a long time|longtemps; all day|toute la journée; all morning|toute la matinée; for hours|pendant des heures;
again|encore une fois; together|ensemble; alone|seul
"""
# Which manner adverbs suit which verbs: objects (t), movement (m), staying still, other intransitives.
_ADVERBS_FOR = {
    "t": {"carefully", "quickly", "quietly", "patiently", "again"},
    "m": {"slowly", "quickly", "quietly", "happily", "early", "late", "alone", "together", "proudly", "sadly", "calmly",
          "silently"},
    "still": {"for a long time", "all day", "all morning", "for hours", "quietly", "patiently", "calmly", "alone",
              "together"},
    "once": {"quickly", "slowly", "quietly", "early", "late", "silently", "calmly"},
}
_ONCE = {"turn", "arrive", "leave", "sit", "get", "wake", "fall", "stop", "come", "jump", "sneeze", "blush", "go"}
_COUNTED = {"buy", "sell", "carry", "find", "bring", "pick", "catch", "feed", "wash", "fill", "plant", "see", "eat",
            "cook", "hide", "paint", "fold", "load", "draw", "cut", "choose", "build"}
_KIN = {"mother", "father", "grandmother", "grandfather", "uncle", "aunt", "brother", "sister", "son", "daughter",
        "husband", "wife", "cousin"}
_NOT_JOBS = {"boy", "girl", "child", "man", "woman", "stranger"}
_FAST = {"hurry", "run"}
_LOUD = {"shout", "sing", "laugh", "whistle", "bark", "cry", "dance"}
_STILL = {"stay", "sleep", "rest", "wait", "sit", "think", "hesitate", "sigh", "shiver", "cry", "laugh", "smile"}
_FREQUENCY = "often|souvent; sometimes|parfois; always|toujours; rarely|rarement"
_CONNECTORS = """Then|Ensuite; Later|Plus tard; After that|Après cela; Suddenly|Soudain; Finally|Enfin;
Meanwhile|Pendant ce temps; Luckily|Heureusement; Unfortunately|Malheureusement"""
_DAYS = list(zip("Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split(),
                 "lundi mardi mercredi jeudi vendredi samedi dimanche".split()))
_EN_NUM = "zero one two three four five six seven eight nine ten eleven twelve".split()
_FR_NUM = "zéro une deux trois quatre cinq six sept huit neuf dix onze douze".split()
_FIRST_NAMES = {
    "en": {"m": "Tom James Peter Daniel Hugh Oliver Henry Samuel Jack Arthur George Edward Robert Harry Simon Martin "
                "Paul Owen Luke Adam Ben Leo Frank Walter",
           "f": "Anna Lucy Mary Emma Sarah Alice Rose Grace Clara Ellen Jane Molly Ruth Hannah Kate Emily Sophie Laura "
                "Ivy Nora Olivia Amelia Elsie Beth"},
    "fr": {"m": "Jean Luc Pierre Paul Louis Théo Hugo Julien Benoît François Jérôme Clément Loïc Étienne Mathieu René "
                "André Rémi Gaël Antoine Nicolas Olivier Hervé Yves",
           "f": "Marie Camille Hélène Élise Léa Chloé Céline Aurélie Gaëlle Sophie Claire Anne Juliette Margaux Lucie "
                "Zoé Inès Agathe Noémie Béatrice Élodie Manon Adèle Mathilde"},
}
_SURNAMES = {"en": "Hale Green Turner Fletcher Brooks Marsh Hill Webb Carter Mason Cooper Reed Shaw Price Bell Ward "
                   "Lane Holt Bishop Pike Moss Barker Dawson Ellis",
             "fr": "Martin Bernard Dubois Moreau Lefèvre Girard Roux Fournier Mercier Blanc Garnier Chevalier "
                   "Rousseau Faure Gauthier Perrin Morel Lemaire Leclerc Dufour Fontaine Barbier Caron Lambert"}
_TITLES = {"en": {"m": "Mr", "f": "Mrs"}, "fr": {"m": "monsieur", "f": "madame"}}
_TOWN_PARTS = {
    "en": ("Ash Oak Stone Mill Salt Fern Elm Briar Thorn Red Green Wren Marsh Kings Bram Wester Gull Lark",
           "ford wick bridge haven mere field ton by brook moor combe stead well cliff", "-on-Sea"),
    "fr": ("Beau Mont Roche Val Clair Belle Ville Bois Pont Font Haute Grand Chante Bourg",
           "fort lieu mont val court ville fontaine roche pré champ vert brune bourg", "-sur-Mer"),
}


def _entries(text: str) -> list[list[str]]:
    """Split a table: entries end with ";", fields are separated by "|", lines may wrap anywhere."""
    return [[f.strip() for f in e.split("|")] for e in re.sub(r"\s*\n\s*", " ", text).split(";") if e.strip()]


def _list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _pairs(text: str) -> list[tuple[str, ...]]:
    return [tuple(e) for e in _entries(text)]


# ---------------------------------------------------------------------------------------------
# Lexicon objects.
@dataclass(frozen=True)
class Noun:
    en: str
    en_pl: str
    gender: str
    fr: str
    fr_pl: str
    cat: str
    themes: str
    mass: bool = False
    en_prep: str = ""
    fr_prep: str = ""
    fr_motion: str = ""
    adjs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Adj:
    en: str
    forms: tuple[str, str, str, str]  # ms fs mp fp
    liaison: str  # masculine singular before a vowel: bel, vieil, nouvel
    codes: str
    pre: bool
    nouns: tuple[str, ...] = ()  # nouns it fits beyond its codes

    def has(self, flag: str) -> bool:
        return flag in self.codes

    def fits(self, noun: Noun) -> bool:
        return _ADJ_CODE.get(noun.cat, "?") in self.codes or noun.en in self.nouns


@dataclass(frozen=True)
class Verb:
    en: tuple[str, str, str, str, str]  # base, 3rd singular, past, past participle, -ing
    particle: str
    fr: str
    refl: bool
    fixed: str
    fr_prep: str
    frame: str
    args: tuple[str, ...]
    places: tuple[str, ...]
    stative: bool
    generic: bool
    progressive: bool = True


def _en_plural(w: str) -> str:
    if w.endswith(("s", "x", "z", "ch", "sh")):
        return w + "es"
    return w[:-1] + "ies" if w.endswith("y") and w[-2] not in "aeiou" else w + "s"


def _fr_plural(w: str) -> str:
    if w.endswith(("s", "x", "z")):
        return w
    if w.endswith(("eau", "au", "eu")):
        return w + "x"
    return w[:-2] + "aux" if w.endswith("al") else w + "s"


def _parse_nouns(cat: str, text: str) -> list[Noun]:
    nouns = []
    for f in _entries(text):
        en, _, en_pl = f[0].partition("/")
        gender, fr = f[1].split(" ", 1)
        fr, _, fr_pl = fr.partition("/")
        kw: dict = {}
        extra = f[3:]
        if cat == "place":
            en_prep, fr_preps = extra.pop(0).split(" ", 1)
            static, _, motion = fr_preps.partition("/")
            kw.update(en_prep=en_prep, fr_prep=static, fr_motion=motion or static)
        for x in extra:
            if x == "M":
                kw["mass"] = True
            else:
                kw["adjs"] = tuple(x.split())
        nouns.append(Noun(en, en_pl or _en_plural(en), gender, fr, fr_pl or _fr_plural(fr), cat,
                          f[2] if len(f) > 2 else "", **kw))
    return nouns


_NOUN_TABLES = {"person": _PEOPLE, "animal": _ANIMALS, "food": _FOOD, "drink": _DRINKS, "readable": _READABLE,
                "text": _TEXTS, "container": _CONTAINERS, "tool": _TOOLS, "clothing": _CLOTHING,
                "instrument": _INSTRUMENTS, "household": _HOUSEHOLD, "small": _SMALL, "vehicle": _VEHICLES,
                "sound": _SOUNDS, "place": _PLACES, "nature": _NATURE, "time": _TIMES_OF_DAY}
_ADJ_CODE = {"person": "p", "animal": "a", "food": "f", "drink": "d", "readable": "r", "text": "x", "container": "c",
             "tool": "o", "clothing": "w", "instrument": "i", "household": "h", "small": "m", "vehicle": "v",
             "place": "l", "sound": "s"}
NOUNS = {cat: _parse_nouns(cat, text) for cat, text in _NOUN_TABLES.items()}
_NOUN_BY_KEY: dict[str, Noun] = {}
for _cat in NOUNS.values():
    for _n in _cat:
        _NOUN_BY_KEY.setdefault(_n.en, _n)


def _fr_feminine(ms: str) -> str:
    if ms.endswith("e") and not ms.endswith("é"):
        return ms
    for old, new in (("eux", "euse"), ("if", "ive"), ("el", "elle"), ("en", "enne"), ("on", "onne"), ("er", "ère"),
                     ("et", "ette"), ("il", "ille")):
        if ms.endswith(old):
            return ms[: -len(old)] + new
    return ms + "e"


def _parse_adjectives(text: str) -> list[Adj]:
    adjs = []
    for en, fr, spec in _entries(text):
        codes, _, nouns = spec.partition("=")
        forms = fr.split("/")
        if " " in fr:  # invariable phrase: en bois, bon marché, en retard
            forms = [fr] * 4
        elif len(forms) == 1:
            forms.append(_fr_feminine(forms[0]))
        if len(forms) == 2:
            ms, fs = forms
            forms += [ms if ms.endswith(("s", "x")) else ms + "x" if ms.endswith("eau") else ms + "s", fs + "s"]
        adjs.append(Adj(en, tuple(forms[:4]), forms[4] if len(forms) > 4 else "", codes, forms[0] in _PRENOMINAL,
                        _list(nouns)))
    return adjs


ADJECTIVES = _parse_adjectives(_ADJECTIVES)
_ADJ_BY_KEY = {}
for _a in ADJECTIVES:
    _ADJ_BY_KEY.setdefault(_a.en, _a)
_CVC = re.compile(r"^[^aeiou]*[aeiou][^aeiouwxy]$")


def _en_forms(head: str) -> tuple[str, str, str, str, str]:
    """base, 3rd singular, past, past participle, -ing from "base[,past[,pp[,ing]]]" (regular forms derived)."""
    forms = head.split(",")
    base = forms[0]
    cvc = bool(_CVC.match(base))  # stop -> stopped, stopping
    if len(forms) > 1:
        past = forms[1]
    elif base.endswith("e"):
        past = base + "d"
    elif base.endswith("y") and base[-2] not in "aeiou":
        past = base[:-1] + "ied"
    else:
        past = base + base[-1] + "ed" if cvc else base + "ed"
    if base == "have":
        s3 = "has"
    elif base.endswith(("s", "x", "z", "ch", "sh", "o")):
        s3 = base + "es"
    else:
        s3 = base[:-1] + "ies" if base.endswith("y") and base[-2] not in "aeiou" else base + "s"
    if len(forms) > 3:
        ing = forms[3]
    elif base.endswith("ie"):
        ing = base[:-2] + "ying"
    elif base.endswith("e") and not base.endswith(("ee", "ye", "oe")):
        ing = base[:-1] + "ing"
    else:
        ing = base + base[-1] + "ing" if cvc else base + "ing"
    return base, s3, past, forms[2] if len(forms) > 2 else past, ing


def _parse_verbs(text: str) -> list[Verb]:
    verbs = []
    for f in _entries(text):
        head, _, particle = f[0].partition(" ")
        main, _, prep = f[1].partition("+")
        refl = main.startswith(("se ", "s'"))
        main = main[3:] if main.startswith("se ") else main[2:] if refl else main
        inf, _, fixed = main.partition(" ")
        frame, flags = f[2][0], f[2][1:]
        args, places = (_list(f[i]) if len(f) > i else () for i in (3, 4))
        verbs.append(Verb(_en_forms(head), particle, inf, refl, fixed, prep, frame, args, places, "s" in flags,
                          "g" in flags, not set(flags) & set("sn")))
    return verbs


VERBS = _parse_verbs(_VERBS)
_WANT = next(v for v in VERBS if v.fr == "vouloir")


# ---------------------------------------------------------------------------------------------
# French morphology.
_FR_VOWELS = "aeiouàâäéèêëîïôöûùüœæ"
_H_ASPIRE = ("hach", "hai", "hang", "haric", "harp", "haut", "hér", "hêtre", "hibou", "homard", "hutte")


def _fr_vowel(word: str) -> bool:
    """True when a French word takes elision before it (l'eau, l'homme, but le héron)."""
    w = word.lower()
    return w == "y" or w[:1] in _FR_VOWELS or (w.startswith("h") and not w.startswith(_H_ASPIRE))


def _fr_strong_stem(stem: str) -> str:
    """Stem of -er verbs in je/tu/il/ils: nettoie, appelle, achète, préfère."""
    if stem.endswith(("oy", "uy")):
        return stem[:-1] + "i"
    if stem in ("appel", "jet"):
        return stem + stem[-1]
    m = re.search(r"[eé]([^aeiouyéèêàâîôû]+)$", stem)
    if m and (m.group(0)[0] == "é" or len(m.group(1)) == 1):
        return stem[: m.start()] + "è" + m.group(1)
    return stem


@lru_cache(maxsize=None)
def _fr_conj(inf: str) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """Présent and imparfait (6 persons) and past participle."""
    if inf in _FR_IRREGULAR:
        pres_s, pp = _FR_IRREGULAR[inf].split("|")
        pres = pres_s.split()
    elif inf.endswith("er"):
        stem = inf[:-2]
        strong = _fr_strong_stem(stem)
        nous = stem + "e" if stem.endswith("g") else stem[:-1] + "ç" if stem.endswith("c") else stem
        pres, pp = [strong + "e", strong + "es", strong + "e", nous + "ons", stem + "ez", strong + "ent"], stem + "é"
    elif inf.endswith("ir"):
        stem = inf[:-2]
        pres, pp = [stem + e for e in ("is", "is", "it", "issons", "issez", "issent")], stem + "i"
    else:
        stem = inf[:-2]
        pres, pp = [stem + e for e in ("s", "s", "", "ons", "ez", "ent")], stem + "u"
    istem = "ét" if inf == "être" else pres[3][:-3]
    impf = []
    for end in ("ais", "ais", "ait", "ions", "iez", "aient"):
        s = istem
        if end[0] == "i" and s.endswith("ge"):
            s = s[:-1]
        elif end[0] == "i" and s.endswith("ç"):
            s = s[:-1] + "c"
        impf.append(s + end)
    return tuple(pres), tuple(impf), pp


_FR_ELIDE = {"de": "d'", "je": "j'", "ne": "n'", "que": "qu'", "me": "m'", "te": "t'", "se": "s'"}
_FR_CONTRACT = {("à", "le"): "au", ("à", "les"): "aux", ("de", "le"): "du", ("de", "les"): "des",
                ("jusqu'à", "le"): "jusqu'au", ("jusqu'à", "les"): "jusqu'aux"}


def _fr_finish(text: str) -> str:
    """Apply elision (l', d', qu', j', n', s', c'), cet/mon before vowels and contractions (au, du, aux, des)."""
    toks = text.split()
    for i, tok in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if tok in ("le", "la") and _fr_vowel(nxt):
            toks[i], toks[i + 1] = "", "l'" + nxt
        elif tok == "ce" and nxt in ("est", "était"):
            toks[i], toks[i + 1] = "", "c'" + nxt
        elif tok == "ce" and _fr_vowel(nxt):
            toks[i] = "cet"
        elif tok in ("ma", "ta", "sa") and _fr_vowel(nxt):
            toks[i] = tok[0] + "on"
        elif tok == "si" and nxt in ("il", "ils"):
            toks[i], toks[i + 1] = "", "s'" + nxt
    toks = [t for t in toks if t]
    out = []
    for i, tok in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if tok in _FR_ELIDE and nxt and _fr_vowel(nxt):
            toks[i + 1] = _FR_ELIDE[tok] + nxt
        elif (tok, nxt) in _FR_CONTRACT:
            toks[i + 1] = _FR_CONTRACT[tok, nxt]
        else:
            out.append(tok)
    return " ".join(out)


def _agree(adj: Adj, gender: str, plural: bool, before: str = "") -> str:
    if adj.liaison and gender == "m" and not plural and before and _fr_vowel(before):
        return adj.liaison
    return adj.forms[(2 if plural else 0) + (gender == "f")]


# ---------------------------------------------------------------------------------------------
# Noun phrases and clauses (language independent), realised by the two grammars below.
@dataclass(frozen=True)
class NP:
    noun: Noun | None = None
    name: str | None = None
    gender: str = "m"
    plural: bool = False
    person: int = 3
    det: str = "def"  # def indef part generic num poss gen dem none
    adjs: tuple[Adj, ...] = ()
    owner: NP | None = None
    count: int = 0
    parts: tuple[NP, ...] = ()
    pron: bool = False
    home: bool = False
    human: bool = True


@dataclass(frozen=True)
class PP:
    kind: str  # at (static), to (motion), on / in (put)
    np: NP


@dataclass(frozen=True)
class Clause:
    subj: NP
    verb: Verb | None = None  # None: copula with adjs
    tense: str = "past"  # pres prog past prog_past habit_past perf fut imp
    obj: NP | None = None
    to: NP | None = None
    pp: PP | None = None
    adjs: tuple[Adj, ...] = ()
    neg: str | None = None  # not / never
    adv: tuple[str, str] | None = None
    freq: tuple[str, str] | None = None
    weather: tuple[str, ...] | None = None
    exist: bool = False
    subjunctive: bool = False


def _pron(np: NP) -> NP:
    """The pronoun features of a noun phrase (he/she/it/they, il/elle/ils/elles)."""
    if np.pron:
        return np
    if np.parts:
        return NP(pron=True, plural=True, gender="f" if all(p.gender == "f" for p in np.parts) else "m")
    return NP(pron=True, plural=np.plural, gender=np.gender, person=np.person, human=np.human)


def _index(np: NP) -> int:
    return np.person - 1 + 3 * np.plural


def _en_a(word: str) -> str:
    w = word.lower()
    vowel = w[:1] in "aeiou" and not w.startswith(("use", "uni", "one", "eu"))
    return "an" if vowel or w.startswith(("hour", "honest", "heir")) else "a"


def _en_pronoun(np: NP, obj: bool = False) -> str:
    if np.plural:
        return {1: ("we", "us"), 2: ("you", "you"), 3: ("they", "them")}[np.person][obj]
    if np.person < 3:
        return (("I", "me"), ("you", "you"))[np.person - 1][obj]
    if not np.human:
        return "it"
    return ("he", "him")[obj] if np.gender == "m" else "her" if obj else "she"


def _en_np(np: NP, rng: random.Random, neg: bool = False, obj: bool = False) -> str:
    """English noun phrase; "some"/bare plural and mass nouns alternate, "any" under negation."""
    if np.parts:
        return " and ".join(_en_np(p, rng) for p in np.parts)
    if np.pron:
        return _en_pronoun(np, obj)
    if np.home:
        return "home"
    if np.name:
        return np.name
    n = np.noun
    adjs = sorted(np.adjs, key=lambda a: a.has("C"))
    words = [a.en for a in adjs] + [n.en_pl if np.plural else n.en]
    det = np.det
    if det == "def":
        return " ".join(["the"] + words)
    if det == "generic" or (det in ("indef", "part") and not neg and (np.plural or n.mass) and rng.random() < 0.5):
        return " ".join(words)
    if det in ("indef", "part"):
        head = ("any" if neg else "some") if (np.plural or n.mass) else _en_a(words[0])
    elif det == "num":
        head = _EN_NUM[np.count]
    elif det == "poss":
        o = np.owner
        head = ("our", "your", "their")[o.person - 1] if o.plural else ("my", "your")[o.person - 1] if o.person < 3 \
            else "its" if not o.human else "his" if o.gender == "m" else "her"
    elif det == "gen":
        head = _en_np(np.owner, rng) + "'s"
    elif det == "dem":
        head = "these" if np.plural else "this"
    else:
        head = "no"
    return " ".join([head] + words)


def _fr_np(np: NP, neg: bool = False) -> str:
    """French noun phrase; articles are written in full (de le, la eau) and contracted by `_fr_finish`."""
    if np.parts:
        return " et ".join(_fr_np(p) for p in np.parts)
    if np.pron:
        return _fr_pronoun(np)
    if np.name:
        return np.name
    n, pl, g = np.noun, np.plural, np.noun.gender
    noun = n.fr_pl if pl else n.fr
    pre = [_agree(a, g, pl, noun) for a in np.adjs if a.pre]  # grand, petit, vieux ... come first
    post = [_agree(a, g, pl) for a in np.adjs if not a.pre and " " not in a.forms[0]]
    phrases = [a.forms[0] for a in np.adjs if " " in a.forms[0]]  # en bois, à pois: last, without "et"
    words = pre + [noun] + ([" et ".join(post)] if post else []) + phrases
    det = np.det
    definite = "les" if pl else "le" if g == "m" else "la"
    if det in ("def", "generic"):
        head = definite
    elif det == "none" or neg and det in ("indef", "part"):  # pas de pain, pas d'eau
        head = "de"
    elif det == "indef":
        head = ("de" if pre else "des") if pl else "un" if g == "m" else "une"
    elif det == "part":
        head = "des" if pl else "de le" if g == "m" else "de la"
    elif det == "num":
        head = _FR_NUM[np.count]
    elif det == "poss":
        o = np.owner
        forms = (("mon", "ma", "mes"), ("ton", "ta", "tes"), ("son", "sa", "ses"), ("notre", "notre", "nos"),
                 ("votre", "votre", "vos"), ("leur", "leur", "leurs"))[_index(o)]
        head = forms[2] if pl else forms[g == "f"]
    elif det == "gen":
        return " ".join([definite] + words + ["de", _fr_np(np.owner)])
    else:  # demonstrative
        head = "ces" if pl else "ce" if g == "m" else "cette"
    return " ".join([head] + words)


def _fr_pronoun(np: NP, stressed: bool = False) -> str:
    """je/tu/il/elle/nous/vous/ils/elles, or the stressed moi/toi/lui/elle/nous/vous/eux/elles (chez lui)."""
    p = _pron(np)
    word = ("moi", "toi", "lui", "nous", "vous", "eux")[_index(p)] if stressed else (
        "je", "tu", "il", "nous", "vous", "ils")[_index(p)]
    return {"il": "elle", "ils": "elles", "lui": "elle", "eux": "elles"}.get(word, word) if p.gender == "f" else word


def _en_be(subj: NP, past: bool) -> str:
    p = _pron(subj)
    if past:
        return "was" if not p.plural and p.person != 2 else "were"
    return "am" if p.person == 1 and not p.plural else "is" if p.person == 3 and not p.plural else "are"


def _en_vp(c: Clause, rng: random.Random) -> list[str]:
    v, subj, neg = c.verb, _pron(c.subj), c.neg
    base, s3, past, pp, ing = v.en
    sg3 = subj.person == 3 and not subj.plural
    tense = c.tense
    if not v.progressive and tense in ("prog", "prog_past"):
        tense = "pres" if tense == "prog" else "past"
    adverb = [neg or c.freq[0]] if (neg or c.freq) else []
    if tense == "pres":
        w = ["does" if sg3 else "do", "not", base] if neg == "not" else adverb + [s3 if sg3 else base]
    elif tense in ("past", "habit_past"):
        w = ["did", "not", base] if neg == "not" else adverb + [past] if adverb else (
            ["used", "to", base] if tense == "habit_past" and rng.random() < 0.25 else [past])
    elif tense in ("prog", "prog_past"):
        w = [_en_be(subj, tense == "prog_past")] + adverb + [ing]
    elif tense == "perf":
        w = ["has" if sg3 else "have"] + adverb + [pp]
    elif tense == "fut":
        w = ["will"] + adverb + [base]
    else:  # imperative
        w = (["do", "not"] if neg else []) + [base]
    return w + v.particle.split()


def _en_rest(c: Clause, rng: random.Random) -> list[str]:
    """Everything after the verb group: objects, adverb, prepositional phrase."""
    w: list[str] = []
    neg = c.neg is not None
    if c.verb and c.verb.frame == "d" and rng.random() < 0.4 and not c.to.pron:
        w += [_en_np(c.to, rng, obj=True), _en_np(c.obj, rng, neg, obj=True)]
    else:
        if c.obj:
            w.append(_en_np(c.obj, rng, neg, obj=True))
        if c.to:
            w += ["to", _en_np(c.to, rng, obj=True)]
    if c.adv:
        w.append(c.adv[0])
    if c.pp:
        np, kind = c.pp.np, c.pp.kind
        if np.home:
            w.append("at home" if kind == "at" else "home")
        else:
            if kind == "to":
                prep = c.verb.args[0] if c.verb.args[0] != "@" else None
            else:
                prep = kind if kind in ("on", "in") else None
            if prep is None:
                prep = np.noun.en_prep if np.noun else "in"
            w += [prep, _en_np(np, rng, obj=True)]
    return w


def _en_clause(c: Clause, rng: random.Random) -> str:
    if c.weather:
        return c.weather[{"pres": 0, "prog": 1, "past": 3}.get(c.tense, 2)]
    if c.exist:
        past = c.tense not in ("pres", "prog")
        be = ("were" if c.obj.plural else "was") if past else ("are" if c.obj.plural else "is")
        obj = replace(c.obj, det="none") if c.neg else c.obj
        return " ".join(["there", be, _en_np(obj, rng)] + _en_rest(replace(c, obj=None, neg=None), rng))
    subj = _en_np(c.subj, rng)
    if c.verb is None:
        be = _en_be(c.subj, c.tense not in ("pres", "prog"))
        adjs = [" and ".join(a.en for a in c.adjs)] if c.adjs else []
        return " ".join([subj, be] + ([c.neg] if c.neg else []) + adjs + _en_rest(c, rng))
    return " ".join([subj] + _en_vp(c, rng) + _en_rest(c, rng))


def _en_question(c: Clause, rng: random.Random) -> str:
    """Yes/no question: auxiliary or be in front, do-support otherwise."""
    subj = _en_np(c.subj, rng)
    if c.verb is None:
        return " ".join([_en_be(c.subj, c.tense not in ("pres", "prog")), subj, " and ".join(a.en for a in c.adjs)])
    vp = _en_vp(replace(c, neg=None, freq=None), rng)
    if vp[0] in ("am", "is", "are", "was", "were", "has", "have", "will"):
        words = [vp[0], subj] + vp[1:]
    else:
        sg3 = _pron(c.subj).person == 3 and not _pron(c.subj).plural
        aux = "did" if c.tense in ("past", "habit_past") else "does" if sg3 else "do"
        words = [aux, subj, c.verb.en[0]] + c.verb.particle.split()
    return " ".join(words + _en_rest(c, rng))


def _fr_pp_agree(pp: str, subj: NP) -> str:
    p = _pron(subj)
    return pp + ("e" if p.gender == "f" else "") + ("s" if p.plural and not pp.endswith("s") else "")


def _fr_vp(c: Clause) -> list[str]:
    v, subj = c.verb, _pron(c.subj)
    i = _index(subj)
    pres, impf, pp = _fr_conj(v.fr)
    refl = ("me", "te", "se", "nous", "vous", "se")[i] if v.refl else ""
    tense = c.tense
    rest: list[str] = []
    if tense in ("pres", "prog"):
        finite = pres[i]
    elif tense in ("prog_past", "habit_past") or (tense == "past" and v.stative):
        finite = impf[i]
    elif tense in ("past", "perf"):
        etre = v.refl or v.fr in _FR_ETRE
        finite = _fr_conj("être" if etre else "avoir")[0][i]
        rest = [_fr_pp_agree(pp, subj) if etre else pp]
    elif tense == "fut":
        finite, rest = _fr_conj("aller")[0][i], [refl, v.fr] if refl else [v.fr]
        refl = ""
    else:  # imperative, 2nd person
        finite = pres[i][:-1] if i == 1 and (pres[i].endswith("es") or v.fr == "aller") else pres[i]
        if refl:
            finite, refl = finite + ("-toi" if i == 1 else "-vous"), ""
    w = (["ne"] if c.neg else []) + ([refl] if refl else []) + [finite]
    w += ([{"not": "pas", "never": "jamais"}[c.neg]] if c.neg else []) + ([c.freq[1]] if c.freq else [])
    return w + rest + (v.fixed.split() if v.fixed else [])


def _fr_rest(c: Clause) -> list[str]:
    w: list[str] = []
    neg = c.neg is not None
    if c.obj:
        w += ([c.verb.fr_prep] if c.verb.fr_prep and c.verb.frame == "t" else []) + [_fr_np(c.obj, neg)]
    if c.to:
        w += ["à", _fr_np(c.to)]
    if c.adv:
        adv = c.adv[1]
        w.append(_fr_pp_agree("seul", c.subj) if adv == "seul" else adv)
    if c.pp:
        np, kind = c.pp.np, c.pp.kind
        verb_prep = c.verb.fr_prep if c.verb and kind == "to" else ""
        if np.home:
            chez = "jusque chez" if verb_prep == "jusqu'à" else f"{verb_prep} chez".strip()  # rentrer chez elle
            w += [chez, _fr_pronoun(c.subj, stressed=True)]
        elif np.name:
            w += [verb_prep or "à", np.name]
        else:
            prep = {"on": "sur", "in": "dans"}.get(kind) or verb_prep or (
                np.noun.fr_motion if kind == "to" else np.noun.fr_prep)
            w += [prep, _fr_np(np)]
    return w


def _fr_clause(c: Clause) -> str:
    if c.weather:
        return c.weather[4 if c.tense in ("pres", "prog") else 6 if c.tense == "past" else 5]
    if c.exist:
        has = "a" if c.tense in ("pres", "prog") else "avait"
        head = ["il", "ne", "y", has, "pas"] if c.neg else ["il", "y", has]
        return " ".join(head + [_fr_np(c.obj, c.neg is not None)] + _fr_rest(replace(c, obj=None, neg=None)))
    subj = _fr_np(c.subj)
    if c.verb is None:
        p = _pron(c.subj)
        etre = ("sois", "sois", "soit", "soyons", "soyez", "soient") if c.subjunctive else _fr_conj("être")[
            0 if c.tense in ("pres", "prog") else 1]
        adjs = [" et ".join(_agree(a, p.gender, p.plural) for a in c.adjs)] if c.adjs else []
        w = [subj] + (["ne", etre[_index(p)], "pas"] if c.neg else [etre[_index(p)]]) + adjs
        return " ".join(w + _fr_rest(c))
    return " ".join([subj] + _fr_vp(c) + _fr_rest(c))


def _fr_question(c: Clause) -> str:
    """Inversion with tu/vous (As-tu vu ... ?), « est-ce que » otherwise."""
    p = _pron(c.subj)
    if c.subj.pron and p.person == 2 and c.verb and not c.verb.refl:
        vp = _fr_vp(replace(c, neg=None, freq=None))
        return " ".join([vp[0] + "-" + _fr_np(c.subj)] + vp[1:] + _fr_rest(c))
    return "est-ce que " + _fr_clause(c)


def _cap(s: str) -> str:
    for i, ch in enumerate(s):
        if ch.isalpha():
            return s[:i] + ch.upper() + s[i + 1:]
    return s


_EN_CONTRACTIONS = [(re.compile(r"\b" + a + r"\b"), b) for a, b in (
    ("I am", "I'm"), ("do not", "don't"), ("does not", "doesn't"), ("did not", "didn't"), ("is not", "isn't"),
    ("are not", "aren't"), ("have not", "haven't"), ("has not", "hasn't"), ("will not", "won't"),
    ("it is", "it's"), ("It is", "It's"), ("we are", "we're"), ("We are", "We're"), ("you are", "you're"),
    ("You are", "You're"), ("I have", "I've"), ("I will", "I'll"))]


# ---------------------------------------------------------------------------------------------
# The planner: one document is a short scene around a main character, in one theme and tense.
@lru_cache(maxsize=None)
def _noun_pool(spec: tuple[str, ...], theme: str) -> tuple[list[Noun], list[float]]:
    """Nouns named by categories or keys, with cumulative weights favouring the document's theme."""
    pool = [n for s in spec for n in (NOUNS[s] if s in NOUNS else [_NOUN_BY_KEY[s]])]
    weights = [4.0 if theme in n.themes else 1.5 if not n.themes.strip("hri") else 0.5 for n in pool]
    return pool, list(itertools.accumulate(weights))


@lru_cache(maxsize=None)
def _places_for(noun: Noun) -> tuple[str, ...]:
    """Places where a thing plausibly is: those sharing one of its themes (a cow: farm, barn, field)."""
    tags = set(noun.themes) - set("hri")
    return tuple(p.en for p in NOUNS["place"] if tags & set(p.themes))


@lru_cache(maxsize=None)
def _adjective_pool(noun: Noun, predicative: bool) -> list[Adj]:
    pool = [_ADJ_BY_KEY[a] for a in noun.adjs] if noun.adjs else [a for a in ADJECTIVES if a.fits(noun)]
    return [a for a in pool if not a.has("A" if predicative else "P")]


@lru_cache(maxsize=None)
def _verb_pool(frames: str, tense: str, animal: str) -> list[Verb]:
    """Verbs that fit the frames, the tense and the subject (a person, or the key of an animal)."""
    return [v for v in VERBS if v.frame in frames and not (v.stative and tense in ("fut", "perf", "imp"))
            and (v.progressive or tense not in ("imp", "prog", "prog_past"))
            and not (tense == "imp" and v.en[0] == "arrive")
            and not (v.stative and tense in ("prog", "prog_past")) and (
                not animal and (v.frame != "i" or not v.args or "person" in v.args)
                or animal and v.frame == "i" and ("animal" in v.args or animal in v.args))]


_TIMES = [(en, fr, tags) for en, fr, tags in _pairs(_TIMES)] + [
    (f"on {day}", fr, "P") for day, fr in _DAYS] + [(f"on {day}s", f"le {fr}", "H") for day, fr in _DAYS] + [
    (f"next {day}", f"{fr} prochain", "F") for day, fr in _DAYS]
_HOURS = [(f"at {_EN_NUM[h]} o'clock", f"à {_FR_NUM[h]} heure" + "s" * (h > 1), "PH") for h in range(1, 12)]
_WEATHER_ROWS = [tuple(e) for e in _entries(_WEATHER)]
_MANNER_PAIRS, _FREQ_PAIRS, _CONNECTOR_PAIRS = _pairs(_MANNER), _pairs(_FREQUENCY), _pairs(_CONNECTORS)
_INTRO_RELATIVES = [  # English present, English past, French present, French past
    ("lives in", "lived in", "habite à", "habitait à"), ("works in", "worked in", "travaille à", "travaillait à"),
    ("has just arrived in", "had just arrived in", "vient d'arriver à", "venait d'arriver à"),
    ("grew up in", "had grown up in", "a grandi à", "avait grandi à")]
_SURFACES = ("table", "shelf", "chair", "bench", "bed", "sofa", "floor")
_BOXES = ("basket", "box", "bag", "suitcase", "crate", "cupboard")
_TIME_TAGS = {"past": "P", "prog_past": "P", "habit_past": "H", "pres": "H", "prog": "N", "fut": "F"}
_SAY = {"say": ("said", "says", "dire"), "ask": ("asked", "asks", "demander"), "shout": ("shouted", "shouts", "crier"),
        "reply": ("replied", "replies", "répondre"), "whisper": ("whispered", "whispers", "chuchoter")}


def _manner(v: Verb, subj: NP) -> list[tuple[str, ...]]:
    """Manner adverbs that suit a verb and its subject (together: plural only; no "shouted quietly")."""
    kind = "still" if v.en[0] in _STILL else "once" if v.en[0] in _ONCE and v.frame == "i" else v.frame
    plural = _pron(subj).plural
    return [a for a in _MANNER_PAIRS
            if (a[0] in _ADVERBS_FOR[kind] if kind in _ADVERBS_FOR else a[0] != "carefully")
            and a[0] != ("alone" if plural else "together")
            and not (v.en[0] in _LOUD and a[0] in ("quietly", "silently"))
            and not (v.en[0] in _FAST and a[0] in ("slowly", "calmly", "patiently"))]


class _Writer:
    """Plans and realises one document: a short scene in one theme and tense around a main character."""

    def __init__(self, lang: str, rng: random.Random) -> None:
        self.lang, self.rng = lang, rng
        self.theme = rng.choice(THEMES)
        self.past = rng.random() < 0.7
        self.town = self._town()
        self.hero = self._person(main=True)
        # later mentions: "Anna", "the fisherman" (not "the old fisherman" again)
        self.hero_short = self.hero if self.hero.noun is None else replace(self.hero, adjs=(), det="def")
        self.other: NP | None = None
        self.last_subject: NP | None = None

    # -- people, things, places, times --------------------------------------------------------
    def _town(self) -> NP:
        first, second, suffix = _TOWN_PARTS[self.lang]
        a = self.rng.choice(first.split())
        b = self.rng.choice([part for part in second.split() if part != a.lower()])
        return NP(name=a + b + (suffix if self.rng.random() < 0.15 else ""), human=False)

    def _name(self, gender: str) -> NP:
        if self.rng.random() < 0.2:  # Mr Hale, madame Moreau
            name = _TITLES[self.lang][gender] + " " + self.rng.choice(_SURNAMES[self.lang].split())
        else:
            name = self.rng.choice(_FIRST_NAMES[self.lang][gender].split())
        return NP(name=name, gender=gender)

    def noun(self, spec: tuple[str, ...] | str) -> Noun:
        pool, weights = _noun_pool((spec,) if isinstance(spec, str) else spec, self.theme)
        return self.rng.choices(pool, cum_weights=weights)[0]

    def adjs(self, noun: Noun, k: int, predicative: bool = False) -> tuple[Adj, ...]:
        """Up to k adjectives; two attributive ones are "plain + colour/material" (a small red box)."""
        pool = _adjective_pool(noun, predicative)
        if not pool or k == 0:
            return ()
        first = self.rng.choice(pool if predicative else [a for a in pool if not a.has("C")] or pool)
        if k == 1:
            return (first,)
        if predicative:
            second = self.rng.choice(pool)
            clash = second.forms[0] == first.forms[0] or any({first.en, second.en} <= g for g in _CLASHES)
            return (first,) if clash else (first, second)
        colours = [a for a in pool if a.has("C") and not first.has("C")]
        return (first, self.rng.choice(colours)) if colours else (first,)

    def _person(self, main: bool = False) -> NP:
        r = self.rng.random()
        if r < 0.5:
            return self._name(self.rng.choice("mf"))
        if main and r < 0.6:  # Tom and Anna
            a, b = self._name(self.rng.choice("mf")), self._name(self.rng.choice("mf"))
            return NP(parts=(a, b), plural=True) if a.name != b.name else a
        noun = self.noun("person")
        while noun.en in _KIN:
            noun = self.noun("person")
        if r > 0.88:  # the sailors, three students
            return NP(noun=noun, gender=noun.gender, plural=True, det="def" if r < 0.94 else "num",
                      count=self.rng.randint(2, 4), adjs=self.adjs(noun, self.rng.random() < 0.3))
        return NP(noun=noun, gender=noun.gender, adjs=self.adjs(noun, self.rng.random() < 0.6))

    def get_other(self) -> NP:
        """The second character: a relative of the hero ("her brother") or someone else."""
        if self.other is None:
            if self.rng.random() < 0.4:
                h = _pron(self.hero)
                spouses = {"husband", "wife"} if h.plural else {"husband" if h.gender == "m" else "wife"}
                noun = self.rng.choice([n for n in NOUNS["person"] if "f" in n.themes and n.en not in spouses])
                self.other = NP(noun=noun, gender=noun.gender, det="poss", owner=h)
            else:
                taken = {self.hero.name} | {p.name for p in self.hero.parts}
                other = self._person()
                while other.name in taken or other.parts:
                    other = self._person()
                self.other = replace(other, adjs=())
        return self.other

    def ref(self, who: NP) -> NP:
        """A later mention: a pronoun when it continues the previous subject, else a short form."""
        short = self.hero_short if who is self.hero else who
        return _pron(short) if self.last_subject is who and self.rng.random() < 0.7 else short

    def thing(self, spec, owner: NP | None = None, neg: bool = False, generic: bool = False,
              counted: bool = True, people: bool = True) -> NP:
        """An object noun phrase; `owner` (the subject) owns possessives, `neg` rules out numbers."""
        rng = self.rng
        noun = self.noun(spec)
        while noun.en in ("husband", "wife") or owner is not None and owner.noun is noun:
            noun = self.noun(spec)
        if noun.cat == "person":
            other = self.get_other()
            if people and owner is not None and other is not owner and other is not self.hero and rng.random() < 0.6:
                return other
            if owner is not None and noun.en in _KIN:
                return NP(noun=noun, gender=noun.gender, det="poss", owner=_pron(owner))
            return NP(noun=noun, gender=noun.gender, adjs=self.adjs(noun, rng.random() < 0.3))
        if noun.cat == "place":
            own = owner is not None and "h" in noun.themes and rng.random() < 0.3
            return NP(noun=noun, gender=noun.gender, det="poss" if own else "def", owner=owner and _pron(owner),
                      human=False, adjs=self.adjs(noun, rng.random() < 0.2))
        if generic:  # likes cheese / aime le fromage
            return NP(noun=noun, gender=noun.gender, det="generic", plural=not noun.mass, human=False)
        r, plural, owner_np = rng.random(), not noun.mass and rng.random() < 0.25, owner and _pron(owner)
        ownable = owner is not None and noun.cat not in ("food", "drink", "sound", "nature")
        named = [p for p in (self.other, self.hero) if p is not None and p.name and p is not owner]
        if r < 0.4:
            det = "def"
        elif r < 0.7 or not ownable:
            det = "part" if noun.mass else "indef"
        elif r < 0.8 and named and people:  # Tom's basket / le panier de Luc
            det, owner_np, plural = "gen", named[0], False
        elif r < 0.9:
            det = "poss"
        elif noun.mass or neg or not counted:
            det, plural = "part" if noun.mass else "indef", False
        else:
            det, plural = "num", True
        k = 0 if rng.random() < 0.55 else 1 if rng.random() < 0.75 else 2
        return NP(noun=noun, gender=noun.gender, det=det, plural=plural, count=rng.randint(2, 12),
                  owner=owner_np, adjs=self.adjs(noun, k), human=False)

    def place(self, spec: tuple[str, ...] = (), owner: NP | None = None, motion: bool = False) -> NP:
        """A place: the town, home (when going somewhere), or a place noun; rooms are not destinations."""
        r = self.rng.random()
        if not spec and r < 0.12:
            return self.town
        if not spec and motion and r < 0.2 and owner is not None:
            return NP(home=True)
        noun = self.noun(spec or "place")
        while motion and "r" in noun.themes:
            noun = self.noun(spec or "place")
        if owner is not None and "h" in noun.themes and self.rng.random() < 0.35:
            return NP(noun=noun, gender=noun.gender, det="poss", owner=_pron(owner), human=False)
        return NP(noun=noun, gender=noun.gender, human=False, adjs=self.adjs(noun, self.rng.random() < 0.2))

    def time(self, tags: str) -> tuple[str, str] | None:
        """A time expression for these tense tags; clock times only now and then."""
        pool = _HOURS if "N" not in tags and "F" not in tags and self.rng.random() < 0.15 else _TIMES
        options = [t for t in pool if set(t[2]) & set(tags)]
        return self.rng.choice(options)[:2] if options else None

    def tense(self) -> str:
        if self.past:
            return self.rng.choices(["past", "prog_past", "habit_past"], [70, 12, 18])[0]
        return self.rng.choices(["pres", "prog"], [65, 35])[0]

    # -- realisation ----------------------------------------------------------------------------
    def say(self, c: Clause) -> str:
        return _en_clause(c, self.rng) if self.lang == "en" else _fr_clause(c)

    def sentence(self, text: str, time: tuple[str, str] | None = None, end: str = ".", front: bool = False) -> str:
        """A finished sentence: time expression, French elision and contraction, capital, end mark."""
        if time:
            t = time[0] if self.lang == "en" else time[1]
            text = f"{t}, {text}" if front or self.rng.random() < 0.6 else f"{text} {t}"
        if self.lang == "fr":
            text = _fr_finish(text)
            end = " " + end if end in "?!" else end  # French spacing: « Où est-il ? »
        return _cap(text) + end

    # -- clauses --------------------------------------------------------------------------------
    def action(self, subj: NP | None = None, tense: str | None = None, frames: str = "itmdu",
               neg: str | None = None, adverbs: bool = True, stative: bool = True
               ) -> tuple[Clause, tuple[str, str] | None]:
        """A random action clause and a matching time expression (or None).

        `neg=""` forbids negation; `adverbs=False` leaves out manner, frequency and time (questions,
        orders and subordinate clauses) and keeps the story's people out of the objects.
        """
        rng = self.rng
        who = None
        if subj is None:
            who = self.hero if rng.random() < 0.7 else self.get_other()
            subj = self.ref(who)
            self.last_subject = who
        tense = tense or self.tense()
        animal = subj.noun.en if subj.noun is not None and subj.noun.cat == "animal" else ""
        v = rng.choice([v for v in _verb_pool(frames, tense, animal) if stative or not v.stative])
        if neg is None and tense != "imp":
            r = rng.random()
            neg = "not" if r < 0.08 else "never" if r < 0.11 and tense in ("pres", "past", "habit_past") else None
        obj = to = pp = None
        if v.frame == "t":
            obj = self.thing(v.args, owner=subj, neg=bool(neg), generic=v.generic, counted=v.en[0] in _COUNTED,
                             people=adverbs and subj.person == 3)
            if v.fr_prep == "de" or (obj.noun and obj.noun.cat in ("vehicle", "instrument")):
                obj = replace(obj, det="def", plural=False, adjs=())  # play the violin, take the bus
            near = v.places or (_places_for(obj.noun) if obj.noun and obj.noun.cat not in ("place", "person") else ())
            if near and not v.stative and rng.random() < (0.3 if v.places else 0.12):
                pp = PP("at", self.place(near, owner=subj))
        elif v.frame == "i" and v.places != ("-",) and (v.en[0] in ("arrive", "stay") or rng.random() < 0.45):
            pp = PP("at", self.place(v.places, owner=subj))
        elif v.frame == "m":
            pp = PP("to", self.place(v.places, owner=subj, motion=True))
        elif v.frame == "d":
            obj = self.thing(v.args, owner=subj, neg=bool(neg), counted=v.en[0] in ("give", "send"), people=False)
            to = self.hero_short if who is not None and who is not self.hero else self.get_other()
        elif v.frame == "u":
            obj = self.thing(("small", "food", "readable", "clothing"), owner=subj, neg=bool(neg))
            target = _NOUN_BY_KEY[rng.choice(_SURFACES + _BOXES)]
            pp = PP("on" if target.en in _SURFACES else "in", NP(noun=target, gender=target.gender, human=False))
        adv = freq = time = None
        if adverbs and v.frame in "itm" and not v.stative and not neg and tense != "imp" and rng.random() < 0.2:
            adv = rng.choice(_manner(v, subj))
        if not adverbs or adv or v.stative:
            pass  # one adverbial is enough; states take none
        elif tense in ("habit_past", "pres") and not neg and rng.random() < 0.4:
            freq = rng.choice(_FREQ_PAIRS)
        elif tense in _TIME_TAGS and neg != "never":
            if rng.random() < (0.75 if tense in ("habit_past", "pres") else 0.3):
                time = self.time(_TIME_TAGS[tense])
        return Clause(subj, v, tense, obj, to, pp, neg=neg or None, adv=adv, freq=freq), time

    def describe(self, subj: NP | None = None, tense: str | None = None, states: bool = False,
                 negatable: bool = True, demonstrative: bool = False) -> Clause:
        """"She was tired." / "The market was busy and noisy." """
        rng = self.rng
        tense = tense or ("past" if self.past else "pres")
        if subj is not None:
            adj = _ADJ_BY_KEY[rng.choice(_STATES)] if states else self.adjs(NOUNS["person"][0], 1, True)[0]
            return Clause(subj, None, tense, adjs=(adj,))
        noun = self.noun(rng.choice(["place", "food", "nature", "container", "household", "animal", "vehicle"]))
        plural = not noun.mass and noun.cat not in ("nature", "place") and rng.random() < 0.2
        np = NP(noun=noun, gender=noun.gender, det="dem" if demonstrative else "def", human=False, plural=plural)
        adjs = self.adjs(noun, 1 + (rng.random() < 0.3), predicative=True) or (_ADJ_BY_KEY["old"],)
        neg = "not" if len(adjs) == 1 and negatable and rng.random() < 0.1 else None
        return Clause(np, None, tense, adjs=adjs, neg=neg)

    def weather(self, tense: str | None = None) -> Clause:
        tense = tense or (self.rng.choice(["prog_past", "prog_past", "past"]) if self.past else "prog")
        return Clause(NP(), weather=self.rng.choice(_WEATHER_ROWS), tense=tense)

    # -- sentences ------------------------------------------------------------------------------
    def intro(self) -> str:
        """The first sentence: who the hero is, the setting, or a first action."""
        rng, h, en = self.rng, self.hero, self.lang == "en"
        r = rng.random()
        if r < 0.35 and h.name and not h.parts:  # Anna was a young baker who lived in Saltmere.
            job = self.noun("person")
            while job.gender != h.gender or "f" in job.themes or job.en in _NOT_JOBS:
                job = self.noun("person")
            np = NP(noun=job, gender=h.gender, det="indef", adjs=self.adjs(job, rng.random() < 0.7))
            en_rel, fr_rel = rng.choice(_INTRO_RELATIVES)[self.past::2]
            self.last_subject = h
            if en:
                return self.sentence(f"{h.name} {'was' if self.past else 'is'} {_en_np(np, rng)} who {en_rel} "
                                     f"{self.town.name}")
            return self.sentence(f"{h.name} {'était' if self.past else 'est'} {_fr_np(np)} qui {fr_rel} "
                                 f"{self.town.name}")
        if r < 0.5 and h.noun and not h.plural:  # An old fisherman lived in Saltmere.
            self.last_subject = h
            first = replace(h, det="indef")
            if en:
                return self.sentence(f"{_en_np(first, rng)} {'lived' if self.past else 'lives'} in {self.town.name}")
            return self.sentence(f"{_fr_np(first)} {'habitait' if self.past else 'habite'} à {self.town.name}")
        if r < 0.7:  # It was a cold morning in Saltmere.
            noun = self.noun("time")
            np = NP(noun=noun, gender=noun.gender, det="indef", adjs=self.adjs(noun, 1), human=False)
            if en:
                return self.sentence(f"it {'was' if self.past else 'is'} {_en_np(np, rng)} in {self.town.name}")
            return self.sentence(f"c'{'était' if self.past else 'est'} {_fr_np(np)} à {self.town.name}")
        c, time = self.action(subj=h, tense="past" if self.past else "pres")
        self.last_subject = h
        if time is None and not c.freq and not c.verb.stative and c.neg != "never":
            time = self.time("P" if self.past else "H")
        return self.sentence(self.say(c), time)

    def s_action(self, first: bool = False) -> str:
        c, time = self.action()
        text = self.say(c)
        if time is None and c.tense == "past" and not c.neg and not first and self.rng.random() < 0.3:
            then = self.rng.choice(_CONNECTOR_PAIRS)[self.lang == "fr"]
            return self.sentence(f"{then}, {text}")
        return self.sentence(text, time)

    def s_describe(self) -> str:
        if self.rng.random() < 0.3:
            subj = self.ref(self.hero)
            self.last_subject = self.hero
            return self.sentence(self.say(self.describe(subj, states=True)))
        return self.sentence(self.say(self.describe()))

    def s_weather(self) -> str:
        text = self.say(self.weather())
        if self.rng.random() < 0.4:  # ... and the sky was grey.
            noun = self.noun("nature")
            sky = Clause(NP(noun=noun, gender=noun.gender, human=False), None, "past" if self.past else "pres",
                         adjs=self.adjs(noun, 1, True))
            text += (" and " if self.lang == "en" else " et ") + self.say(sky)
        time = self.time("P" if self.past else "N") if self.rng.random() < 0.4 else None
        return self.sentence(text, time, front=True)

    def s_there(self) -> str:
        """There was/were ... : things that belong to the place (food at the market, crabs on the beach)."""
        rng = self.rng
        place = self.noun("place")
        tags, indoor = set(place.themes) - set("hri"), "i" in place.themes
        cats = ("food", "container", "household", "small", "readable", "clothing", "instrument", "animal") if indoor \
            else ("animal", "vehicle", "tool", "container", "small") + (("food",) if "k" in place.themes else ())
        pool = [n for cat in cats for n in NOUNS[cat] if not (indoor and cat == "animal" and "f" not in n.themes)]
        weights = [5.0 if set(n.themes) & tags else 1.0 if indoor and not n.themes else 0.2 for n in pool]
        noun = rng.choices(pool, weights)[0]
        neg = "not" if rng.random() < 0.15 else None
        plural = not noun.mass and rng.random() < 0.35
        det = "part" if noun.mass else "num" if plural and rng.random() < 0.5 and not neg else "indef"
        obj = NP(noun=noun, gender=noun.gender, det=det,
                 plural=plural, count=rng.randint(2, 12), adjs=() if neg else self.adjs(noun, rng.random() < 0.5),
                 human=False)
        where = NP(noun=place, gender=place.gender, human=False, adjs=self.adjs(place, rng.random() < 0.25))
        c = Clause(NP(), tense="past" if self.past else "pres", obj=obj, pp=PP("at", where), exist=True, neg=neg)
        return self.sentence(self.say(c))

    def s_complex(self) -> str:
        """Two clauses: because / when / while / although / so / but (parce que, quand, pendant que ...)."""
        rng, en, past = self.rng, self.lang == "en", self.past
        kind = rng.choice(["because", "when", "while", "although", "so", "but"])
        main, _ = self.action(subj=self.ref(self.hero), tense="past" if past else "pres",
                              neg="" if kind == "but" else None, stative=False)
        self.last_subject = self.hero
        state = "prog_past" if past else "pres"
        if kind == "because":
            sub = self.describe(_pron(self.hero), states=True) if rng.random() < 0.5 else self.weather(state)
            return self.sentence(f"{self.say(main)} {'because' if en else 'parce que'} {self.say(sub)}")
        if kind == "when":
            sub = self.weather("past" if past else "pres") if rng.random() < 0.3 else self.action(
                subj=self.ref(self.get_other()), tense="past" if past else "pres", neg="", adverbs=False)[0]
            return self.sentence(f"{'when' if en else 'quand'} {self.say(sub)}, {self.say(main)}")
        if kind == "while":
            sub, _ = self.action(subj=self.ref(self.get_other()), tense=state, frames="it", neg="", adverbs=False)
            return self.sentence(f"{'while' if en else 'pendant que'} {self.say(sub)}, {self.say(main)}")
        if kind == "although":  # bien que + subjonctif for states, même si + indicatif for the weather
            main = replace(main, subj=self.hero_short)
            if rng.random() < 0.5:
                sub = self.describe(_pron(self.hero), states=True)
                fr = "bien que " + self.say(replace(sub, subjunctive=True))
            else:
                sub = self.weather(state)
                fr = "même si " + self.say(sub)
            return self.sentence(f"although {self.say(sub)}, {self.say(main)}" if en else f"{fr}, {self.say(main)}")
        if kind == "so":
            return self.sentence(f"{self.say(self.weather(state))}, {'so' if en else 'alors'} {self.say(main)}")
        second, _ = self.action(subj=_pron(self.hero), tense=main.tense, frames="t", neg="not")
        return self.sentence(f"{self.say(main)}, {'but' if en else 'mais'} {self.say(second)}")

    def s_dialogue(self) -> str:
        """A line of direct speech (statement, question, order, exclamation), sometimes with a reply."""
        rng, en = self.rng, self.lang == "en"
        speaker, listener = (self.hero, self.get_other()) if rng.random() < 0.6 else (self.get_other(), self.hero)
        if _pron(speaker).plural:
            speaker, listener = listener, speaker
        if _pron(speaker).plural:
            return self.s_action()
        me, we = NP(pron=True, person=1), NP(pron=True, person=1, plural=True)
        you = NP(pron=True, person=2, plural=_pron(listener).plural)
        kind = rng.choice(["announce", "ask", "want", "where", "exclaim", "order", "weather"])
        end, reply = ".", None
        if kind == "announce":  # I am going to the market. / Je vais au marché.
            c, _ = self.action(subj=me if rng.random() < 0.8 else we, tense=rng.choice(["prog", "fut", "perf"]),
                               frames="tmu", adverbs=False)
            text = self.say(c)
        elif kind == "ask":  # Have you seen the dog? / As-tu vu le chien ?
            c, _ = self.action(subj=you, tense=rng.choice(["prog", "perf", "fut"]), frames="tm", neg="", adverbs=False)
            text, end = (_en_question(c, rng) if en else _fr_question(c)), "?"
        elif kind == "want":  # Do you want some tea? / Veux-tu du thé ?
            obj = self.thing(("food", "drink"))
            obj = replace(obj, det="part" if obj.noun.mass else "indef", plural=False, adjs=())
            c = Clause(you, _WANT, "pres", obj=obj)
            text, end = (_en_question(c, rng) if en else _fr_question(c)), "?"
        elif kind == "where":  # Where is my hat? - It is on the chair.
            thing = self.thing(("small", "readable", "clothing", "container"), owner=me if rng.random() < 0.6 else None)
            thing = replace(thing, det="poss" if thing.det == "poss" else "def", adjs=())
            be = _en_be(thing, False) if en else ("sont" if thing.plural else "est")
            text, end = (f"where {be} {_en_np(thing, rng)}" if en else f"où {be} {_fr_np(thing)}"), "?"
            spot = _NOUN_BY_KEY[rng.choice(_SURFACES + _BOXES)]
            where = PP("on" if spot.en in _SURFACES else "in", NP(noun=spot, gender=spot.gender, human=False))
            answer = Clause(_pron(replace(thing, human=False)), None, "pres", pp=where)
            reply = self.say(answer)
        elif kind == "exclaim":  # This soup is delicious! / Cette soupe est délicieuse !
            text, end = self.say(self.describe(tense="pres", negatable=False, demonstrative=rng.random() < 0.5)), "!"
        elif kind == "order":  # Bring the basket! / Apporte le panier !
            c, _ = self.action(subj=you, tense="imp", frames="tm", neg="", adverbs=False)
            if c.obj is not None and c.obj.det in ("indef", "num", "gen"):
                c = replace(c, obj=replace(c.obj, det="def", plural=False))
            text, end = " ".join((_en_vp(c, rng) + _en_rest(c, rng)) if en else (_fr_vp(c) + _fr_rest(c))), "!"
        else:  # It is raining this morning.
            text = self.say(self.weather("prog")) + " " + self.time("N")[self.lang == "fr"]
        first = self.quote(text, end, speaker, {"?": "ask", "!": "shout"}.get(end, "say"))
        return first + " " + self.quote(reply, ".", listener, "reply") if reply else first

    def quote(self, text: str, end: str, who: NP, verb: str) -> str:
        """Direct speech with its tag: "...," said Anna. / « ... », a dit Marie. / Marie a dit : « ... »"""
        rng, past = self.rng, self.past
        if verb == "say" and rng.random() < 0.2:
            verb = "whisper"
        short = self.hero_short if who is self.hero else who
        pron = self.last_subject is who and rng.random() < 0.5
        plural = _pron(short).plural
        self.last_subject = who
        en_past, en_pres, fr_verb = _SAY[verb]
        if self.lang == "en":
            inner = _cap(text)
            if rng.random() < 0.6:
                for pattern, contracted in _EN_CONTRACTIONS:
                    inner = pattern.sub(contracted, inner)
            tag = en_past if past else verb if plural else en_pres
            name = _en_np(_pron(short) if pron else short, rng)
            if not pron and rng.random() < 0.3:
                return _cap(f"{name} {tag}, \"{inner}{end}\"")
            quoted = f"\"{inner}{',' if end == '.' else end}\""
            return quoted + (f" {name} {tag}." if pron or rng.random() < 0.5 else f" {tag} {name}.")
        inner = _cap(_fr_finish(text)) + (" " + end if end != "." else "")
        pres, _, pp = _fr_conj(fr_verb)
        aux, finite = ("ont", pres[5]) if plural else ("a", pres[2])
        if pron:  # a-t-elle dit, ont-ils dit, dit-elle, demande-t-il
            p = _fr_np(_pron(short))
            if past:
                tag = f"{aux}-t-{p} {pp}" if not plural else f"{aux}-{p} {pp}"
            else:
                tag = finite + ("-t-" if finite[-1] in "ae" else "-") + p
        else:
            tag = f"{aux} {pp} {_fr_np(short)}" if past else f"{finite} {_fr_np(short)}"
            if rng.random() < 0.3:
                said = f"{aux} {pp}" if past else finite
                return _cap(f"{_fr_finish(_fr_np(short))} {said} : « {inner}{'.' if end == '.' else ''} »")
        return f"« {inner} »{',' if end == '.' else ''} {_fr_finish(tag)}."

    def document(self) -> str:
        n = self.rng.randint(3, 7)
        out = [self.intro()]
        kinds = ["action"] * 8 + ["describe"] * 2 + ["weather", "there", "there"] + ["complex"] * 3 + ["dialogue"] * 2
        while len(out) < n:
            kind = self.rng.choice(kinds)
            out.append(self.s_action(len(out) == 1) if kind == "action" else getattr(self, "s_" + kind)())
        return " ".join(out)


# ---------------------------------------------------------------------------------------------
def _check(language: str, split: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}: expected one of {LANGUAGES}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")


def generate_documents(language: str, split: str, n_documents: int | None = None) -> list[str]:
    """Documents (one paragraph of 3-7 sentences each) for a language and split.

    The seed is a string of language and split, so the output is the same on every run and every
    machine (no `hash()`), and each split draws different documents.
    """
    _check(language, split)
    n = DEFAULT_SIZES[split] if n_documents is None else n_documents
    if n < 0:
        raise ValueError(f"n_documents must be non-negative, got {n}")
    rng = random.Random(f"superpose-bundled-corpus/{language}/{split}")
    return [_Writer(language, rng).document() for _ in range(n)]


def write_corpus(out_dir: str | Path) -> dict[tuple[str, str], Path]:
    """Write `out_dir/{lang}/{split}.txt` (UTF-8, one document per line) for every language and split."""
    paths = {}
    for language in LANGUAGES:
        for split in SPLITS:
            path = Path(out_dir) / language / f"{split}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(generate_documents(language, split)) + "\n", encoding="utf-8")
            paths[language, split] = path
    return paths
