import Mustache from "mustache"
import { DEFAULT_LANG, isLang, type Lang } from "../../domain/messages.ts"
import type { OutgoingEmail } from "../../services/Mailer.ts"

/** The receipt processor's e-mails (spec: subscription receipt, donation receipt, demo welcome; plus the LRS add-on receipt). */
export const EMAIL_TEMPLATES = ["subscription", "donation", "lrs-addon", "demo-welcome"] as const
export type EmailTemplate = (typeof EMAIL_TEMPLATES)[number]

/** Template data: plain strings (amount, currency, tier, key, key_prefix(es), session_id, email). */
export type TemplateData = Readonly<Record<string, string>>

/** One template's wording in one language; `{{name}}` placeholders are filled from the data. */
interface Wording {
  readonly subject: string
  /** Paragraphs, in order. */
  readonly lines: ReadonlyArray<string>
  /** Label before the key (subscription and demo welcome only). */
  readonly keyLabel?: string
}

type Catalogue = { readonly [T in EmailTemplate]: Wording }

const WORDING: { readonly [L in Lang]: Catalogue } = {
  en: {
    subscription: { subject: "Your Trinity Beast API key ({{tier}})", lines: ["Thank you for subscribing to the {{tier}} plan ({{amount}} {{currency}}).", "Keep this key secret. It is shown only in this e-mail: we store just a hash of it and cannot send it again."], keyLabel: "Your API key:" },
    donation: { subject: "Thank you for your donation", lines: ["We received your donation of {{amount}} {{currency}}.", "Thank you for supporting Trinity Beast."] },
    "lrs-addon": { subject: "LRS reports are enabled", lines: ["Thank you for your purchase ({{amount}} {{currency}}).", "Reports (LRS) are now enabled on your API key(s) {{key_prefixes}}."] },
    "demo-welcome": { subject: "Welcome to Trinity Beast", lines: ["Welcome! Your demo key has a small monthly allowance for trying the price API.", "Keep this key secret: it is shown only in this e-mail."], keyLabel: "Your demo API key:" }
  },
  es: {
    subscription: { subject: "Su clave de API de Trinity Beast ({{tier}})", lines: ["Gracias por suscribirse al plan {{tier}} ({{amount}} {{currency}}).", "Mantenga esta clave en secreto. Solo se muestra en este correo: guardamos únicamente un hash y no podemos enviarla de nuevo."], keyLabel: "Su clave de API:" },
    donation: { subject: "Gracias por su donación", lines: ["Hemos recibido su donación de {{amount}} {{currency}}.", "Gracias por apoyar Trinity Beast."] },
    "lrs-addon": { subject: "Los informes LRS están activados", lines: ["Gracias por su compra ({{amount}} {{currency}}).", "Los informes (LRS) ya están activados en sus claves de API {{key_prefixes}}."] },
    "demo-welcome": { subject: "Bienvenido a Trinity Beast", lines: ["¡Bienvenido! Su clave de demostración incluye un pequeño cupo mensual para probar la API de precios.", "Mantenga esta clave en secreto: solo se muestra en este correo."], keyLabel: "Su clave de API de demostración:" }
  },
  pt: {
    subscription: { subject: "Sua chave de API da Trinity Beast ({{tier}})", lines: ["Obrigado por assinar o plano {{tier}} ({{amount}} {{currency}}).", "Mantenha esta chave em segredo. Ela aparece só neste e-mail: guardamos apenas um hash e não podemos enviá-la de novo."], keyLabel: "Sua chave de API:" },
    donation: { subject: "Obrigado pela sua doação", lines: ["Recebemos sua doação de {{amount}} {{currency}}.", "Obrigado por apoiar a Trinity Beast."] },
    "lrs-addon": { subject: "Os relatórios LRS estão ativados", lines: ["Obrigado pela sua compra ({{amount}} {{currency}}).", "Os relatórios (LRS) agora estão ativados nas suas chaves de API {{key_prefixes}}."] },
    "demo-welcome": { subject: "Bem-vindo à Trinity Beast", lines: ["Bem-vindo! Sua chave de demonstração tem uma pequena cota mensal para testar a API de preços.", "Mantenha esta chave em segredo: ela aparece só neste e-mail."], keyLabel: "Sua chave de API de demonstração:" }
  },
  fr: {
    subscription: { subject: "Votre clé d'API Trinity Beast ({{tier}})", lines: ["Merci pour votre abonnement à l'offre {{tier}} ({{amount}} {{currency}}).", "Gardez cette clé secrète. Elle n'apparaît que dans cet e-mail : nous n'en conservons qu'une empreinte et ne pouvons pas la renvoyer."], keyLabel: "Votre clé d'API :" },
    donation: { subject: "Merci pour votre don", lines: ["Nous avons bien reçu votre don de {{amount}} {{currency}}.", "Merci de soutenir Trinity Beast."] },
    "lrs-addon": { subject: "Les rapports LRS sont activés", lines: ["Merci pour votre achat ({{amount}} {{currency}}).", "Les rapports (LRS) sont désormais activés sur vos clés d'API {{key_prefixes}}."] },
    "demo-welcome": { subject: "Bienvenue sur Trinity Beast", lines: ["Bienvenue ! Votre clé de démonstration dispose d'un petit quota mensuel pour essayer l'API de prix.", "Gardez cette clé secrète : elle n'apparaît que dans cet e-mail."], keyLabel: "Votre clé d'API de démonstration :" }
  },
  de: {
    subscription: { subject: "Ihr Trinity-Beast-API-Schlüssel ({{tier}})", lines: ["Vielen Dank für Ihr Abonnement des Tarifs {{tier}} ({{amount}} {{currency}}).", "Halten Sie diesen Schlüssel geheim. Er steht nur in dieser E-Mail: Wir speichern nur einen Hash und können ihn nicht erneut senden."], keyLabel: "Ihr API-Schlüssel:" },
    donation: { subject: "Vielen Dank für Ihre Spende", lines: ["Wir haben Ihre Spende über {{amount}} {{currency}} erhalten.", "Danke, dass Sie Trinity Beast unterstützen."] },
    "lrs-addon": { subject: "LRS-Berichte sind freigeschaltet", lines: ["Vielen Dank für Ihren Kauf ({{amount}} {{currency}}).", "Berichte (LRS) sind jetzt für Ihre API-Schlüssel {{key_prefixes}} freigeschaltet."] },
    "demo-welcome": { subject: "Willkommen bei Trinity Beast", lines: ["Willkommen! Ihr Demo-Schlüssel hat ein kleines Monatskontingent zum Ausprobieren der Preis-API.", "Halten Sie diesen Schlüssel geheim: Er steht nur in dieser E-Mail."], keyLabel: "Ihr Demo-API-Schlüssel:" }
  },
  ru: {
    subscription: { subject: "Ваш API-ключ Trinity Beast ({{tier}})", lines: ["Спасибо за подписку на тариф {{tier}} ({{amount}} {{currency}}).", "Храните этот ключ в секрете. Он показан только в этом письме: мы храним лишь его хеш и не можем отправить его повторно."], keyLabel: "Ваш API-ключ:" },
    donation: { subject: "Спасибо за пожертвование", lines: ["Мы получили ваше пожертвование в размере {{amount}} {{currency}}.", "Спасибо, что поддерживаете Trinity Beast."] },
    "lrs-addon": { subject: "Отчёты LRS подключены", lines: ["Спасибо за покупку ({{amount}} {{currency}}).", "Отчёты (LRS) теперь подключены для ваших API-ключей {{key_prefixes}}."] },
    "demo-welcome": { subject: "Добро пожаловать в Trinity Beast", lines: ["Добро пожаловать! Демо-ключ даёт небольшой месячный лимит, чтобы попробовать API цен.", "Храните этот ключ в секрете: он показан только в этом письме."], keyLabel: "Ваш демо-ключ API:" }
  },
  hi: {
    subscription: { subject: "आपकी Trinity Beast API कुंजी ({{tier}})", lines: ["{{tier}} प्लान की सदस्यता लेने के लिए धन्यवाद ({{amount}} {{currency}})।", "इस कुंजी को गुप्त रखें। यह केवल इसी ई-मेल में दिखाई जाती है: हम केवल इसका हैश रखते हैं और इसे दोबारा नहीं भेज सकते।"], keyLabel: "आपकी API कुंजी:" },
    donation: { subject: "आपके दान के लिए धन्यवाद", lines: ["हमें आपका {{amount}} {{currency}} का दान मिल गया है।", "Trinity Beast का समर्थन करने के लिए धन्यवाद।"] },
    "lrs-addon": { subject: "LRS रिपोर्ट सक्षम हो गई हैं", lines: ["आपकी खरीद के लिए धन्यवाद ({{amount}} {{currency}})।", "आपकी API कुंजियों {{key_prefixes}} पर रिपोर्ट (LRS) अब सक्षम हैं।"] },
    "demo-welcome": { subject: "Trinity Beast में आपका स्वागत है", lines: ["स्वागत है! आपकी डेमो कुंजी में मूल्य API आज़माने के लिए एक छोटा मासिक कोटा है।", "इस कुंजी को गुप्त रखें: यह केवल इसी ई-मेल में दिखाई जाती है।"], keyLabel: "आपकी डेमो API कुंजी:" }
  },
  ur: {
    subscription: { subject: "آپ کی Trinity Beast API کلید ({{tier}})", lines: ["{{tier}} پلان کی رکنیت لینے کا شکریہ ({{amount}} {{currency}})۔", "یہ کلید خفیہ رکھیں۔ یہ صرف اسی ای میل میں دکھائی جاتی ہے: ہم صرف اس کا ہیش محفوظ رکھتے ہیں اور اسے دوبارہ نہیں بھیج سکتے۔"], keyLabel: "آپ کی API کلید:" },
    donation: { subject: "آپ کے عطیے کا شکریہ", lines: ["ہمیں آپ کا {{amount}} {{currency}} کا عطیہ موصول ہو گیا ہے۔", "Trinity Beast کی مدد کرنے کا شکریہ۔"] },
    "lrs-addon": { subject: "LRS رپورٹس فعال ہو گئی ہیں", lines: ["آپ کی خریداری کا شکریہ ({{amount}} {{currency}})۔", "آپ کی API کلیدوں {{key_prefixes}} پر رپورٹس (LRS) اب فعال ہیں۔"] },
    "demo-welcome": { subject: "Trinity Beast میں خوش آمدید", lines: ["خوش آمدید! آپ کی ڈیمو کلید میں قیمتوں کی API آزمانے کے لیے ایک چھوٹا ماہانہ کوٹہ ہے۔", "یہ کلید خفیہ رکھیں: یہ صرف اسی ای میل میں دکھائی جاتی ہے۔"], keyLabel: "آپ کی ڈیمو API کلید:" }
  },
  it: {
    subscription: { subject: "La tua chiave API Trinity Beast ({{tier}})", lines: ["Grazie per esserti abbonato al piano {{tier}} ({{amount}} {{currency}}).", "Tieni segreta questa chiave. Compare solo in questa e-mail: ne conserviamo solo un hash e non possiamo inviarla di nuovo."], keyLabel: "La tua chiave API:" },
    donation: { subject: "Grazie per la tua donazione", lines: ["Abbiamo ricevuto la tua donazione di {{amount}} {{currency}}.", "Grazie per sostenere Trinity Beast."] },
    "lrs-addon": { subject: "I report LRS sono abilitati", lines: ["Grazie per il tuo acquisto ({{amount}} {{currency}}).", "I report (LRS) sono ora abilitati sulle tue chiavi API {{key_prefixes}}."] },
    "demo-welcome": { subject: "Benvenuto in Trinity Beast", lines: ["Benvenuto! La tua chiave demo ha una piccola quota mensile per provare l'API dei prezzi.", "Tieni segreta questa chiave: compare solo in questa e-mail."], keyLabel: "La tua chiave API demo:" }
  },
  ar: {
    subscription: { subject: "مفتاح API الخاص بك من Trinity Beast ({{tier}})", lines: ["شكرًا لاشتراكك في خطة {{tier}} ({{amount}} {{currency}}).", "احتفظ بهذا المفتاح سرًا. يظهر في هذه الرسالة فقط: نحتفظ ببصمته فقط ولا يمكننا إرساله مرة أخرى."], keyLabel: "مفتاح API الخاص بك:" },
    donation: { subject: "شكرًا لتبرعك", lines: ["تلقينا تبرعك بمبلغ {{amount}} {{currency}}.", "شكرًا لدعمك Trinity Beast."] },
    "lrs-addon": { subject: "تم تفعيل تقارير LRS", lines: ["شكرًا لشرائك ({{amount}} {{currency}}).", "أصبحت التقارير (LRS) مفعّلة الآن على مفاتيح API الخاصة بك {{key_prefixes}}."] },
    "demo-welcome": { subject: "مرحبًا بك في Trinity Beast", lines: ["مرحبًا! يتيح لك المفتاح التجريبي حصة شهرية صغيرة لتجربة واجهة الأسعار.", "احتفظ بهذا المفتاح سرًا: يظهر في هذه الرسالة فقط."], keyLabel: "مفتاح API التجريبي الخاص بك:" }
  },
  ja: {
    subscription: { subject: "Trinity Beast の API キー（{{tier}}）", lines: ["{{tier}} プランのご契約ありがとうございます（{{amount}} {{currency}}）。", "このキーは秘密にしてください。表示されるのはこのメールだけです。当社はハッシュのみを保存しており、再送できません。"], keyLabel: "API キー:" },
    donation: { subject: "ご寄付ありがとうございます", lines: ["{{amount}} {{currency}} のご寄付を受け付けました。", "Trinity Beast へのご支援に感謝いたします。"] },
    "lrs-addon": { subject: "LRS レポートが有効になりました", lines: ["ご購入ありがとうございます（{{amount}} {{currency}}）。", "お使いの API キー {{key_prefixes}} でレポート（LRS）が有効になりました。"] },
    "demo-welcome": { subject: "Trinity Beast へようこそ", lines: ["ようこそ！デモキーでは、価格 API を試せる少量の月間枠をご利用いただけます。", "このキーは秘密にしてください。表示されるのはこのメールだけです。"], keyLabel: "デモ API キー:" }
  },
  zh: {
    subscription: { subject: "您的 Trinity Beast API 密钥（{{tier}}）", lines: ["感谢您订阅 {{tier}} 套餐（{{amount}} {{currency}}）。", "请妥善保管此密钥。它只会出现在这封邮件中：我们只保存其哈希值，无法再次发送。"], keyLabel: "您的 API 密钥：" },
    donation: { subject: "感谢您的捐赠", lines: ["我们已收到您 {{amount}} {{currency}} 的捐赠。", "感谢您支持 Trinity Beast。"] },
    "lrs-addon": { subject: "LRS 报表已开通", lines: ["感谢您的购买（{{amount}} {{currency}}）。", "您的 API 密钥 {{key_prefixes}} 现已开通报表（LRS）功能。"] },
    "demo-welcome": { subject: "欢迎使用 Trinity Beast", lines: ["欢迎！您的演示密钥有少量每月额度，可用于试用价格 API。", "请妥善保管此密钥：它只会出现在这封邮件中。"], keyLabel: "您的演示 API 密钥：" }
  }
}

const RTL: ReadonlyArray<Lang> = ["ar", "ur"]

const HTML_LAYOUT = `<!doctype html>
<html lang="{{lang}}" dir="{{dir}}"><head><meta charset="utf-8"><title>{{subject}}</title></head>
<body style="font-family: sans-serif; line-height: 1.5">
{{#lines}}<p>{{.}}</p>
{{/lines}}{{#key}}<p>{{keyLabel}}</p>
<pre style="font-size: 1.1em; padding: .5em; background: #f4f4f4">{{key}}</pre>
{{/key}}<p style="color: #666; font-size: .9em">Trinity Beast · {{session_id}}</p>
</body></html>
`

const TEXT_LAYOUT = `{{#lines}}{{.}}

{{/lines}}{{#key}}{{keyLabel}}
    {{key}}

{{/key}}-- 
Trinity Beast · {{session_id}}
`

/** Mustache's HTML escaping for the HTML part; the text part is rendered unescaped. */
const renderText = (template: string, view: object): string => Mustache.render(template, view, {}, { escape: (value: string) => value })

/** One e-mail in the recipient's language (an unsupported one falls back to English), HTML and text from the same data. */
export const renderEmail = (template: EmailTemplate, lang: string, data: TemplateData, to: string): OutgoingEmail => {
  const language: Lang = isLang(lang) ? lang : DEFAULT_LANG
  const wording = WORDING[language][template]
  const fill = (text: string) => renderText(text, data)
  const subject = fill(wording.subject)
  const lines = wording.lines.map(fill)
  const key = template === "subscription" || template === "demo-welcome" ? data["key"] : undefined
  const view = { lang: language, dir: RTL.includes(language) ? "rtl" : "ltr", subject, lines, key, keyLabel: wording.keyLabel ?? "", session_id: data["session_id"] ?? "" }
  return { to, subject, html: Mustache.render(HTML_LAYOUT, view), text: renderText(TEXT_LAYOUT, view) }
}
